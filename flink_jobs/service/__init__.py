"""The serving side: what websites and marketers read of the job's results (Redis, the status
and change topics), over HTTP (``segments serve``)."""
