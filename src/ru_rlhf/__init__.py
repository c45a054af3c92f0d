"""ru-rlhf
"""

__version__ = "0.1"
