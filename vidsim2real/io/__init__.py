"""Input/output: atomic writes, video (MP4) reading and writing, data set export."""
