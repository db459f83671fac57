"""megacode: the Code Llama training recipe as a Megatron-Core 3D-parallel system."""

__version__ = "0.1.0"
