"""Options every bluegreen module that talks to HAProxy shares (extends_documentation_fragment)."""


class ModuleDocFragment:
    # bluegreen_haproxy: the runtime API socket
    DOCUMENTATION = r"""
options:
  socket:
    description: HAProxy's admin runtime API socket.
    type: path
    required: true
"""

    # bluegreen_haproxy.live_map: the map whose `live` entry names the live color
    LIVE_MAP = r"""
options:
  map:
    description: Path of the live-color map file, as named in haproxy.cfg.
    type: path
    required: true
"""
