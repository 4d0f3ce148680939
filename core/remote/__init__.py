"""Remote stylizing: ``stylecam serve`` on a GPU machine, a ``remote`` backend on the laptop.

The video travels over WebRTC (aiortc on both sides); the offer/answer exchange is one HTTP
request in the WHIP pattern (``POST`` of ``application/sdp`` -> ``201 Created`` with the answer
and a ``Location``; ``DELETE`` ends the session), so OBS's WHIP output can push to it too.

Modules, each with one job:

* :mod:`.auth`      the bearer token: loading it, comparing it in constant time, bind checks
* :mod:`.protocol`  the data-channel messages and the frame matcher (which sent frame came back)
* :mod:`.hub`       the server's stylizer thread: per-session latest-frame slots, shared batches
* :mod:`.server`    ``stylecam serve``: the HTTP side (aiohttp) and the WebRTC sessions
* :mod:`.client`    :class:`~.client.RemoteBackend`: a :class:`~..stylize.base.Backend` that
                    paints on a server and falls back to the local classic style when it cannot

aiortc, aiohttp and PyAV are imported only by :mod:`.server` and :mod:`.client`, inside the
functions that need them, so ``stylecam`` starts (and says what is missing) without them.
"""
