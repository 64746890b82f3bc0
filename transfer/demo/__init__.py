"""The demo's machinery: real nodes started as processes on loopback, driven over HTTP."""
