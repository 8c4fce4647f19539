"""``sddsf bridge SPACE DOC``: serve one document to existing Yjs apps.

A thin command over :class:`sddsf.client.bridge.Bridge`: it opens the device
(locking its home only while it syncs, as ``sync --watch`` does), prints the
URL with the token once, then one line per change (editors connecting, edits
sent and received, the relay going away and coming back) until Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import signal

import click

from sddsf.cli.device_cmds import CliDevice, _run, _Watch, _with_device
from sddsf.cli.output import JSON_HELP, say
from sddsf.cli.params import NAME
from sddsf.errors import UsageError

__all__ = ["register"]

#: y-websocket's default port (sddsf.client.bridge.DEFAULT_PORT; that module is
#: imported only when the command runs, to keep the CLI's start-up light).
_DEFAULT_PORT = 1234


async def _serve(device: CliDevice, space_name: str, doc_name: str, host: str, port: int,
                 allow_remote: bool, as_json: bool) -> None:
    from sddsf.client.bridge import Bridge  # noqa: PLC0415 - see _DEFAULT_PORT

    space_id = device.space_by_name(space_name)
    view = _Watch(device, as_json)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bridge = Bridge(device, space_id, doc_name, host=host, port=port,
                    allow_remote=allow_remote, on_sync=view.synced, on_error=view.failed,
                    on_event=lambda line: view.event("client", line, message=line),
                    ended=stop.set)
    async with bridge:
        server = bridge.server
        assert server is not None  # noqa: S101 - set on entry
        _announce(view, space_name, doc_name, server.server_url, server.url,
                  server.token.value, as_json)
        await stop.wait()
    view.event("stopped", f"stopped; {device.pending_count()} edit(s) pending",
               pending=device.pending_count())
    if bridge.failure is not None:
        raise bridge.failure


def _announce(view: _Watch, space_name: str, doc_name: str, server_url: str, url: str,
              token: str, as_json: bool) -> None:
    """The one time the token is shown: the URL, and the provider call that uses it."""
    if as_json:
        view.event("listening", url, url=url, server=server_url, room=doc_name, token=token,
                   space=space_name, doc=doc_name)
        return
    view.out.line(f"bridge for space {space_name!r}, document {doc_name!r} on {server_url} "
                  "(Ctrl-C stops)")
    view.out.line(f"url: {url}")
    view.out.line(f"y-websocket: new WebsocketProvider({json.dumps(server_url)}, "
                  f"{json.dumps(doc_name)}, ydoc, {{ params: {{ token: {json.dumps(token)} }} }})")
    view.out.line("The token is shown only here, and changes at every start: whoever has it "
                  "can read and edit the document.")


@click.command()
@click.argument("space_name", metavar="SPACE", type=NAME)
@click.argument("doc_name", metavar="DOC", type=NAME)
@click.option("--port", default=_DEFAULT_PORT, show_default=True,
              type=click.IntRange(0, 65535), help="Port to listen on (0: any free port).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Loopback address to listen on (127.0.0.1, ::1 or localhost).")
@click.option("--allow-remote", is_flag=True,
              help="INSECURE: allow a --host that is not loopback. The y-websocket protocol "
                   "is not encrypted: the token and the document would cross the network "
                   "in plaintext.")
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@click.pass_context
def bridge(ctx: click.Context, space_name: str, doc_name: str, port: int, host: str,
           allow_remote: bool, as_json: bool) -> None:
    """Serve document DOC of SPACE to existing Yjs apps (the y-websocket protocol).

    Point the app's y-websocket provider at the printed URL (the room is DOC,
    the token goes in its `params`): its edits sync end-to-end encrypted
    through the relay, and edits from other devices appear in it. Listens on
    loopback only, and every connection needs the token printed at start.
    The bridge sees the document in plaintext, as this device does.
    """
    if doc_name.startswith("_"):
        raise UsageError(f"document {doc_name!r} is internal to sddsf (names starting with "
                         "'_' are reserved); bridge a document of your own")
    from sddsf.client.bridge import check_host  # noqa: PLC0415 - see _DEFAULT_PORT

    check_host(host, allow_remote=allow_remote)  # before the home is opened
    if allow_remote:
        say("warning: --allow-remote: the bridge is not encrypted; anyone who can reach "
            f"{host} and sees the traffic gets the token and the document", err=True)
    _run(_with_device(ctx, lambda d: _serve(d, space_name, doc_name, host, port,
                                            allow_remote, as_json), lock="operation"))


def register(cli: click.Group) -> None:
    """Attach ``bridge`` to the top-level group."""
    cli.add_command(bridge)
