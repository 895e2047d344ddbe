"""REST service: the FastAPI app, signed-request verification, the uvicorn server, and the signed client base."""
