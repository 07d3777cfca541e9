package subnet

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

func lease(sn, pub string) Lease {
	return Lease{Subnet: pfx(sn), Attrs: LeaseAttrs{PublicIP: addr(pub)}}
}

func added(l Lease) Event { return Event{Type: EventAdded, Lease: l} }
func removed(sn string) Event {
	return Event{Type: EventRemoved, Lease: Lease{Subnet: pfx(sn)}}
}

func subnets(ls []Lease) []string {
	out := []string{}
	for _, l := range ls {
		out = append(out, fmt.Sprintf("%s@%s", l.Subnet, l.Attrs.PublicIP))
	}
	return out
}

func TestWatcher(t *testing.T) {
	own := pfx("100.96.1.0/24")
	a, b, c := lease("100.96.2.0/24", "198.18.0.2"), lease("100.96.3.0/24", "198.18.0.3"), lease("100.96.4.0/24", "198.18.0.4")
	ownLease := lease("100.96.1.0/24", "198.18.0.1")
	bMoved := lease("100.96.3.0/24", "198.18.0.33")
	cVXLAN := c
	cVXLAN.Attrs.BackendType, cVXLAN.Attrs.BackendData = "vxlan", json.RawMessage(`{"VNI":1,"VtepMAC":"a6:d7:18:cf:e6:cb"}`)

	w := NewWatcher(own)
	steps := []struct {
		name       string
		result     WatchResult
		wantEvents []Event
		wantSet    []Lease
	}{
		{
			name:       "first snapshot, own lease left out",
			result:     WatchResult{Resync: true, Leases: []Lease{b, ownLease, a}},
			wantEvents: []Event{added(a), added(b)},
			wantSet:    []Lease{a, b},
		},
		{
			name:       "renewal of a known lease is no change",
			result:     WatchResult{Events: []Event{added(a)}},
			wantEvents: nil,
			wantSet:    []Lease{a, b},
		},
		{
			name:       "own lease events are ignored",
			result:     WatchResult{Events: []Event{added(ownLease), removed("100.96.1.0/24")}},
			wantEvents: nil,
			wantSet:    []Lease{a, b},
		},
		{
			name:       "add, change, remove of unknown",
			result:     WatchResult{Events: []Event{added(c), added(bMoved), removed("100.96.9.0/24")}},
			wantEvents: []Event{added(c), added(bMoved)},
			wantSet:    []Lease{a, bMoved, c},
		},
		{
			name:       "remove",
			result:     WatchResult{Events: []Event{removed("100.96.2.0/24")}},
			wantEvents: []Event{removed("100.96.2.0/24")},
			wantSet:    []Lease{bMoved, c},
		},
		{
			name:       "resync after compaction: a removal and a change were missed",
			result:     WatchResult{Resync: true, Leases: []Lease{cVXLAN, a}},
			wantEvents: []Event{removed("100.96.3.0/24"), added(a), added(cVXLAN)},
			wantSet:    []Lease{a, cVXLAN},
		},
		{
			name:       "identical resync is no change",
			result:     WatchResult{Resync: true, Leases: []Lease{a, cVXLAN}},
			wantEvents: nil,
			wantSet:    []Lease{a, cVXLAN},
		},
		{
			name:       "empty resync removes all",
			result:     WatchResult{Resync: true},
			wantEvents: []Event{removed("100.96.2.0/24"), removed("100.96.4.0/24")},
			wantSet:    []Lease{},
		},
	}
	for _, s := range steps {
		events := w.Apply(s.result)
		if !reflect.DeepEqual(events, s.wantEvents) {
			t.Errorf("%s: events\n got %+v\nwant %+v", s.name, events, s.wantEvents)
		}
		if got, want := subnets(w.Leases()), subnets(s.wantSet); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: set %v, want %v", s.name, got, want)
		}
	}
}
