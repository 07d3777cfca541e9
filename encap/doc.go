// Package encap holds overlayd's wire formats and the per-packet helpers of
// the data path: IPv4 validation, the flannel UDP and VXLAN (RFC 7348)
// encapsulations, Internet checksums, and the ICMP errors the forwarder
// writes back into the TUN. The offloads of a TUN with a virtio-net header
// (segmentation, coalescing, partial checksums) are in encap/offload,
// which builds on this package.
//
// Everything here works in place on caller-owned buffers: encapsulation
// writes a header into headroom reserved in front of the inner packet, and
// decapsulation validates and re-slices. Nothing allocates per packet, and
// the package imports only the standard library.
package encap
