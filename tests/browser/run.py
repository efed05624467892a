#!/usr/bin/python3
"""Browser test of the web chat widget, the agent desktop and the supervisor page
(webchat.test.mjs), the widget embedded by a site on its own origin (tests/browser/pages.py
starts the servers)."""
import sys

import pages
from pages import harness


def setup(tmp, servers):
    site_port = harness.free_port()
    config = ('[webchat]\n'
              'allowed_origins = http://localhost:%d\n'
              'topics = general claims:claims\n'
              '[queue claims]\n'
              'channels = webchat voice email\n'
              'sla_seconds = 60\n') % site_port
    return config, {'SITE_PORT': str(site_port)}


if __name__ == '__main__':
    sys.exit(pages.run('webchat.test.mjs', 'omnicc-browser-', setup))
