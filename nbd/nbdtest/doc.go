// Package nbdtest helps test NBD servers and their clients: Memory is an
// in-memory nbd.Backend with hole tracking, Resolver serves a fixed set of
// exports, and Client is a raw-bytes NBD client that can negotiate every
// handshake variant the server supports and also send what real clients
// never do (malformed options, lying lengths, pipelined bytes, bad magic),
// checking the structure of every reply it reads.
package nbdtest
