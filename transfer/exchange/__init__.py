"""Node-to-node transfer: the peer protocol, outbox, inbox, receipts and transfer requests."""
