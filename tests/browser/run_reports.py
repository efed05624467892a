#!/usr/bin/python3
"""Browser test of the reports page (/reports/, docs/ANALYTICS.md; reports.test.mjs); the
servers are started by tests/browser/pages.py."""
import sys

import pages


def setup(tmp, servers):
    config = ('[analytics]\ntimezone = Europe/Madrid\n'
              '[queue default]\nchannels = voice email fax branch webchat\nsla_seconds = 30\n')
    return config, {'DOWNLOADS': tmp}


if __name__ == '__main__':
    sys.exit(pages.run('reports.test.mjs', 'omnicc-browser-reports-', setup))
