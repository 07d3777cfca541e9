package subnet

import (
	"maps"
	"net/netip"
	"slices"
)

// Watcher reduces what a lease watch delivers (complete snapshots and
// deltas) to the current set of other hosts' leases, and reports each
// effective change once. It does no I/O, so its logic is tested without a
// registry (flannel's LeaseWatcher plays the same part). The zero value is
// not usable; call NewWatcher. A Watcher is not safe for concurrent use.
type Watcher struct {
	own    netip.Prefix
	leases map[netip.Prefix]Lease
}

// NewWatcher returns an empty Watcher that leaves out the lease of own, the
// local host's subnet (the zero Prefix leaves out nothing).
func NewWatcher(own netip.Prefix) *Watcher {
	return &Watcher{own: own, leases: make(map[netip.Prefix]Lease)}
}

// Reset replaces the set with snapshot and returns the events that turn
// the previous set into it: removals first, then additions and changes.
func (w *Watcher) Reset(snapshot []Lease) []Event {
	next := make(map[netip.Prefix]Lease, len(snapshot))
	for _, l := range snapshot {
		if l.Subnet != w.own {
			next[l.Subnet] = l
		}
	}
	var events []Event
	for _, sn := range sortedKeys(w.leases) {
		if _, ok := next[sn]; !ok {
			events = append(events, Event{Type: EventRemoved, Lease: Lease{Subnet: sn}})
		}
	}
	for _, sn := range sortedKeys(next) {
		l := next[sn]
		if old, ok := w.leases[sn]; !ok || !old.Attrs.Equal(l.Attrs) {
			events = append(events, Event{Type: EventAdded, Lease: l})
		}
	}
	w.leases = next
	return events
}

// Update applies deltas in order and returns the ones that changed the set:
// a re-announced lease with unchanged attributes (a renewal) and the
// removal of an unknown subnet are dropped, as is anything about own.
func (w *Watcher) Update(events []Event) []Event {
	var out []Event
	for _, ev := range events {
		sn := ev.Lease.Subnet
		if sn == w.own {
			continue
		}
		switch ev.Type {
		case EventAdded:
			if old, ok := w.leases[sn]; ok && old.Attrs.Equal(ev.Lease.Attrs) {
				continue
			}
			w.leases[sn] = ev.Lease
		case EventRemoved:
			if _, ok := w.leases[sn]; !ok {
				continue
			}
			delete(w.leases, sn)
		default:
			continue
		}
		out = append(out, ev)
	}
	return out
}

// Apply feeds one watch result to Reset or Update.
func (w *Watcher) Apply(r WatchResult) []Event {
	if r.Resync {
		return w.Reset(r.Leases)
	}
	return w.Update(r.Events)
}

// Leases returns the current set, ordered by subnet.
func (w *Watcher) Leases() []Lease {
	out := make([]Lease, 0, len(w.leases))
	for _, sn := range sortedKeys(w.leases) {
		out = append(out, w.leases[sn])
	}
	return out
}

func sortedKeys(m map[netip.Prefix]Lease) []netip.Prefix {
	return slices.SortedFunc(maps.Keys(m), func(a, b netip.Prefix) int { return a.Compare(b) })
}
