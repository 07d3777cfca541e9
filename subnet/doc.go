// Package subnet is overlayd's control-plane model, compatible with
// flanneld v0.28: the network config (Config), the leases hosts hold on
// subnets of it (Lease, in flanneld's JSON), the subnet file
// (/run/flannel/subnet.env), the lease Manager that acquires, renews and
// watches leases on a Registry, the pure Watcher reducer behind it, and the
// data path's peer Table. It does no I/O to etcd itself: subnet/etcd
// implements Registry, subnet/subnettest fakes it.
//
// Where overlayd behaves differently from flanneld, on purpose:
//   - Renewal keeps the lease's one etcd lease alive (KeepAliveOnce).
//     flanneld grants a new etcd lease and rewrites the key at every
//     renewal, which orphans the old lease and makes every peer see the
//     lease "added" again.
//   - When its own lease is deleted or revoked, overlayd takes the same
//     subnet back; flanneld exits.
//   - A lease key without an etcd lease stays a reservation when its host
//     reuses it, as flannel's documentation promises (flanneld v0.28
//     attaches a 24h lease to it, flannel-io/flannel#1329).
//   - A udp Backend.Port of 0 means 8285 (flanneld would bind a random port
//     that no peer can reach).
//   - Leases read by listing or watching carry no Expiration: flanneld asks
//     etcd for it with one extra request per lease and event; only the
//     lease's owner needs it.
//   - Acquire prefers, among several leases carrying our PublicIP, the one
//     named by the subnet file.
package subnet
