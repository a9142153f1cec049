// Package quorum is the quorum lease service that keeps two partitioned PMs
// of a unit from both running its VMs (DESIGN.md §6). A small server outside
// the unit grants a lease to at most one node of each unit at a time; a PM
// that cannot hear its peer runs the VMs only while it holds the lease.
//
// # Wire
//
// One UDP datagram per request and per reply: the magic "DYQ1", a JSON body
// and an HMAC-SHA256 of magic and body under the unit's quorum key
// (unitca.QuorumKey), at most 2048 bytes. Requests and replies decode
// strictly (unknown fields are refused), so one can never be taken for the
// other; a later format needs a new magic. The server drops anything it
// cannot authenticate or validate without answering.
//
// # Lease
//
// A lease belongs to one incarnation of a node: the node and the Boot of its
// client. The server grants an acquire when nobody holds the lease, when
// the holder's lease has expired on the server's monotonic clock (expiry =
// time of receipt + TTL), or when the holder renews it. A renewal never
// shortens the lease: its expiry is the later of the old and the new one, so
// every end a client was ever told stays valid. Another boot of the holding
// node is refused like the other node until the lease expires: a node that
// rebooted ran nothing meanwhile, and letting it take over would let a
// replay of an old boot's release end the lease of the current one. Only the
// holding incarnation can release.
//
// The client counts the lease from the moment just before it first sent the
// request that the reply answers (retries of one request share its nonce,
// and any of them reached the server after the first was sent), and gives up
// a further ttl/500 for the two clocks running at different rates. So its
// end is never later than the server's, and the server never grants the
// lease to the other node while a client may still believe it holds it.
// This assumes neither machine suspends (a suspended PM's monotonic clock
// stops) and that clock rates differ by far less than 0.2%.
//
// # Replays
//
// Every request carries Seq, which a client raises by one for every datagram
// it sends and starts from the wall clock in nanoseconds, so it also rises
// across restarts of the client. For each unit, node and Boot the server
// drops a request whose Seq is not above the last one it accepted. It
// remembers a few recent boots of each node and never forgets the boot that
// holds the lease; a replayed request of a forgotten boot can only act on a
// lease of that dead boot, which no running client counts on.
//
// # Quiet period
//
// A server keeps leases only in memory. After a restart it may have
// forgotten a lease it granted, so for the first MaxTTL after NewServer it
// refuses every acquire (Error "quorum server starting"); by then any lease
// it granted before has expired, as no lease exceeds MaxTTL.
package quorum

import "time"

// DefaultPort is the UDP port of the quorum server.
const DefaultPort = 7413

// MaxTTL bounds a lease a server grants; a server starting up grants nothing
// for MaxTTL (it may have forgotten a lease it granted before a restart).
const MaxTTL = 30 * time.Second

// Operations of a Request.
const (
	OpAcquire = "acquire"
	OpRelease = "release"
	OpQuery   = "query"
)

// errStarting is the reply to an acquire during the quiet period.
const errStarting = "quorum server starting"
