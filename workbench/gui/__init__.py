"""The Qt desktop GUI: widgets over the Qt-free engine; nothing here runs experiments itself."""
