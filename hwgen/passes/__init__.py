"""IR -> IR passes. Each pass is a plain function returning a PassResult; recipes are explicit lists."""

from hwgen.passes.base import NodeRecord, PassResult, run_pipeline

__all__ = ["NodeRecord", "PassResult", "run_pipeline"]
