"""Hugging Face interop: import Llama 2 (`LlamaForCausalLM`) into a megacode checkpoint at any
TP/PP/VP layout, and export any megacode checkpoint as a Hugging Face directory.

    from megacode.convert import ImportOptions, import_hf, ExportOptions, export_hf
    import_hf(ImportOptions(input="llama-2-7b-hf", output="ckpt/llama2-7b", tp=2, pp=2))
    export_hf(ExportOptions(input="runs/stage1/checkpoints", output="codellama-7b-hf"))

Both stream one tensor (chunk) at a time; see tools/convert_checkpoint.py for the command line.
"""

from megacode.convert.common import ConvertError
from megacode.convert.hf_export import ExportOptions, export_hf
from megacode.convert.hf_import import ImportOptions, import_hf

__all__ = ["ConvertError", "ExportOptions", "ImportOptions", "export_hf", "import_hf"]
