"""twins-serve: one verified artifact served by a real Triton server (PyTriton's tritonserver, Python backend).

`execute` (what the model does with a batch of requests), `python_model` (the Triton Python-backend model
that runs it), `server` (options, the model repository, the server's lifecycle), `load` (the load generator
and the in-process figures), `report` (the table).
"""
