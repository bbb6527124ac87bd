"""`dsocr serve` and its clients: one resident engine behind HTTP, batching across requests."""


def runner_for(server: str | None, model: str | None, device: str = "auto", dtype: str = "auto",
               logprobs: bool = False, **options):
    """The Runner a command uses: the server's (--server URL / $DSOCR_SERVER) when one is named, else
    the local engine, as load_runner builds it. `options`: load_runner's (the server picks its own
    batch and compilation; the generation settings travel with every request)."""
    if server:
        from .. import timing
        from .client import remote_runner
        timing.clock.model_starts()
        return remote_runner(server, logprobs, **options)
    from ..runner import load_runner
    return load_runner(model, device, dtype, logprobs=logprobs, **options)
