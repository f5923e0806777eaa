"""Model workers on other hosts (docs/remote-workers.md).

tls.py     mutual TLS contexts: worker hosts accept only gateway certificates from the gateway
           CA, gateways only worker certificates from the worker CA
wire.py    the framed protocol over TCP: sandbox.protocol's frames plus model, ping/pong and
           error kinds
host.py    WorkerHost: `llmos worker serve --listen`, sandboxed workers behind a TLS listener
client.py  RemoteModel: the gateway side, endpoints from configuration or DNS, least
           outstanding requests, health checks, ejection and re-admission
"""
