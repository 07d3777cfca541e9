package traffic

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// PingResult is what came back for one [Ping]. At most one of Reply,
// FragNeeded, Unreachable and LocalTooBig is set; none is set when nothing
// came back in time.
type PingResult struct {
	Reply bool          // an echo reply with the payload intact
	RTT   time.Duration // from sending to the reply or ICMP error

	FragNeeded bool // a router answered "fragmentation needed" (type 3 code 4)
	NextHopMTU int  // the MTU it reported; 0 if it gave none

	Unreachable bool // another ICMP error about the echo: ICMPType and ICMPCode say which

	LocalTooBig bool // the local kernel refused to send the packet (EMSGSIZE)
	LocalMTU    int  // the route's MTU from IP_MTU, when the kernel gave it

	From     netip.Addr // the sender of the reply or ICMP error
	ICMPType uint8      // the ICMP error's type and code, when FragNeeded or Unreachable
	ICMPCode uint8
}

// String describes r for test failures and reports.
func (r PingResult) String() string {
	var b strings.Builder
	switch {
	case r.Reply:
		fmt.Fprintf(&b, "reply from %s in %v", r.From, r.RTT)
	case r.FragNeeded:
		fmt.Fprintf(&b, "fragmentation needed from %s, next-hop MTU %d", r.From, r.NextHopMTU)
	case r.Unreachable:
		fmt.Fprintf(&b, "ICMP type %d code %d from %s", r.ICMPType, r.ICMPCode, r.From)
	case r.LocalTooBig:
		fmt.Fprintf(&b, "message too long for the local route (MTU %d)", r.LocalMTU)
	default:
		b.WriteString("no answer")
	}
	return b.String()
}

// PingStats is what a series of pings ([PingRTT]) measured.
type PingStats struct {
	Sent     int64        `json:"sent"`
	Received int64        `json:"received"` // replies in time
	RTT      LatencyStats `json:"rtt"`      // of the replies
}
