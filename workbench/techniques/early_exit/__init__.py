"""early_exit"""
