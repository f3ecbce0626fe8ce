"""The paper run rehearsed at size (`benchmarks/rehearse.py`): its stand-in engine, counting S3 server and stages."""
