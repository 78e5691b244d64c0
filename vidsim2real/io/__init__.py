"""File formats, nothing else: atomic writes, MP4 video, PNG/G-buffer files, checkpoints."""
