// Package qmp is a client of the QEMU Machine Protocol over a unix socket:
// it performs the capabilities handshake, runs commands matched to their
// replies by id and hands asynchronous events to the caller without ever
// letting a slow consumer stall the connection.
package qmp
