package offload

import "errors"

// Errors of the offload transforms. Like encap's errors (ErrTruncated
// is one of theirs), they are never wrapped, so the data path can count
// them without allocating.
var (
	// ErrTooManySegments: a super-packet holds more segments than the
	// buffers offered. It is not a drop: the caller keeps the packet and
	// offers it again with more buffers (or uses SplitGSOHead).
	ErrTooManySegments = errors.New("offload: more GSO segments than buffers")
	// ErrGSOType: the virtio-net header asks for a GSO type this package
	// does not handle (UFO, ECN, or unknown). The packet is dropped.
	ErrGSOType = errors.New("offload: unsupported virtio-net GSO type")
	// ErrVirtioHdr: the virtio-net header disagrees with the packet: a
	// GSO size of 0, a checksum position outside the packet or not at the
	// transport header, a header length longer than the packet, or a
	// protocol that does not match the GSO type. The packet is dropped.
	ErrVirtioHdr = errors.New("offload: virtio-net header disagrees with the packet")
	// ErrNoTransportChecksum: CompleteChecksum was given a packet with no
	// TCP or UDP checksum it can finish.
	ErrNoTransportChecksum = errors.New("offload: no TCP or UDP checksum to complete")
)
