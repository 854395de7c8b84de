"""A tracker whose backend fails after its run started (tests only): the run must warn once and
go on, its folder keeping every record."""

from sagan_cli.api import NoParams, Tracker, TrackerPlugin, hookimpl


class Flaky(Tracker):
    def __init__(self, params, context):
        self.calls = 0

    def start(self, run):
        return "flaky-1"

    def log_metrics(self, step, metrics, tags):
        raise ConnectionError("the tracking server went away")

    def finish(self, status):
        pass


@hookimpl
def sagan_register_tracker(register):
    register(
        TrackerPlugin(api_version=1, name="flaky", summary="t", factory=Flaky, params=NoParams)
    )
