package subnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// LeaseAttrs is the JSON value of a lease key, byte for byte flanneld's
// (pkg/lease LeaseAttrs): fields in this order, PublicIPv6 written as null
// when absent, BackendType and BackendData left out when empty, e.g.
//
//	{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"a6:d7:18:cf:e6:cb"}}
//
// flanneld's udp backend writes no BackendType at all; Backend reports such a
// lease as "udp".
type LeaseAttrs struct {
	PublicIP    netip.Addr
	PublicIPv6  *netip.Addr
	BackendType string          `json:",omitempty"`
	BackendData json.RawMessage `json:",omitempty"`
	// BackendV6Data is flannel's dual-stack field, kept so that a lease
	// read and written back loses nothing.
	BackendV6Data json.RawMessage `json:",omitempty"`
}

// Backend returns the lease's backend type, "udp" when the lease names none
// (flanneld's udp leases).
func (a LeaseAttrs) Backend() string {
	if a.BackendType == "" {
		return BackendUDP
	}
	return a.BackendType
}

// Equal reports whether a and b hold the same values.
func (a LeaseAttrs) Equal(b LeaseAttrs) bool {
	sameV6 := (a.PublicIPv6 == nil) == (b.PublicIPv6 == nil) &&
		(a.PublicIPv6 == nil || *a.PublicIPv6 == *b.PublicIPv6)
	return a.PublicIP == b.PublicIP && sameV6 && a.BackendType == b.BackendType &&
		bytes.Equal(a.BackendData, b.BackendData) && bytes.Equal(a.BackendV6Data, b.BackendV6Data)
}

// Lease is one host's claim on a subnet of the network.
type Lease struct {
	Subnet netip.Prefix
	Attrs  LeaseAttrs
	// Expiration is when the registry drops the lease unless it is renewed.
	// It is zero for a reservation (a key without TTL), and it is only known
	// to the lease's owner: leases listed or watched carry a zero Expiration.
	Expiration time.Time
}

// SubnetKey returns the last element of a lease's key, "100.96.3.0-24", as
// flannel's MakeSubnetKey writes it for an IPv4-only lease.
func SubnetKey(p netip.Prefix) string {
	return p.Addr().String() + "-" + strconv.Itoa(p.Bits())
}

// ParseSubnetKey parses a lease key, either its last element
// ("100.96.3.0-24") or a whole key path ("/coreos.com/network/subnets/100.96.3.0-24").
// A dual-stack key's "&<ipv6>-<len>" suffix is checked and then ignored:
// overlayd routes IPv4 only. The subnet must be an IPv4 network address.
func ParseSubnetKey(key string) (netip.Prefix, error) {
	name := key[strings.LastIndexByte(key, '/')+1:]
	v4, v6, dual := strings.Cut(name, "&")
	p, err := parseKeyPrefix(v4)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: want <ipv4>-<prefix length>, like 100.96.3.0-24", key)
	}
	if p.Masked() != p {
		return netip.Prefix{}, fmt.Errorf("subnet key %q: %s has host bits set; a lease names a network address, like %s", key, p, SubnetKey(p.Masked()))
	}
	if dual {
		if q, err := parseKeyPrefix(v6); err != nil || !q.Addr().Is6() || q.Addr().Is4In6() || q.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("subnet key %q: want <ipv6>-<prefix length> after \"&\"", key)
		}
	}
	return p, nil
}

// parseKeyPrefix parses "<addr>-<bits>" with decimal bits and no sign or
// leading zeros, as flannel's key regex (\d+) and MakeSubnetKey agree on.
func parseKeyPrefix(s string) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, errors.New("no '-'")
	}
	bits := s[i+1:]
	if bits == "" || len(bits) > 3 || (len(bits) > 1 && bits[0] == '0') || strings.Trim(bits, "0123456789") != "" {
		return netip.Prefix{}, errors.New("bad prefix length")
	}
	return netip.ParsePrefix(s[:i] + "/" + bits)
}

// EventType says what happened to a lease.
type EventType int

const (
	// EventAdded is a new lease, or new attributes for a known one.
	EventAdded EventType = iota
	// EventRemoved is a lease that expired or was deleted. Only its Subnet
	// is set.
	EventRemoved
)

func (t EventType) String() string {
	switch t {
	case EventAdded:
		return "added"
	case EventRemoved:
		return "removed"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is one change to the set of leases.
type Event struct {
	Type  EventType
	Lease Lease
}

// WatchResult is one delivery of a lease watch (Registry.WatchLeases).
type WatchResult struct {
	// Revision is the registry revision that this result brings the watcher
	// up to: a watch resumed from Revision+1 misses nothing.
	Revision int64
	// Resync says Leases is the complete set of leases, replacing all that
	// was known before: the watch fell behind (etcd compaction) and re-listed.
	Resync bool
	Leases []Lease // only with Resync
	Events []Event // only without Resync; may be empty (progress)
}
