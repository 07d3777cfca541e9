// Package offload holds the transforms behind a TUN opened with
// IFF_VNET_HDR, which hands over and takes packets with a virtio-net header
// in front (VirtioNetHdr) and lets them exceed the MTU.
//
// Reading, super-packets come in and segments go out: SplitGSO and
// SplitGSOHead cut a TSO or USO super-packet into packets fit for the wire,
// as the kernel's GSO would. Writing, segments come in and super-packets go
// out: Coalesce merges consecutive segments of a TCP or UDP flow, as the
// kernel's GRO would, and says what to write (CoalesceGather without
// copying payloads: a list of buffers for writev(2)). Either way a TCP or UDP
// checksum may stay partial (the pseudo-header sum, CHECKSUM_PARTIAL) for
// whoever needs it complete; CompleteChecksum finishes it.
//
// Like encap, whose checksum primitives it uses, it works in place on
// caller-owned buffers and allocates nothing per packet.
package offload
