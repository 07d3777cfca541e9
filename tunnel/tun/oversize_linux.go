package tun

import (
	"golang.org/x/sys/unix"

	"github.com/overlayd/overlayd/encap/offload"
)

// TCP packets longer than the MTU. A kernel VTEP that sends over a veth
// with TX offloads on hands its peer TCP super-frames whole (see
// offload.SuperPacketHdr); written into the TUN as they are, the kernel
// would drop them at the next link. Write cuts them at the interface's
// MTU instead: with a virtio-net header, by handing the kernel each as a
// super-packet (offload.GROTable.MTU); without, in user space, one
// segment at a time.

// writeMTU returns the MTU that Write cuts TCP packets at. It asks the
// kernel only when a packet of bufs is longer than the MTU it last got (or
// on the first Write): super-frames are rare, and an MTU that changed
// shows as one. An interface it cannot ask any more (renamed) gets no
// packet cut.
func (d *nativeDevice) writeMTU(bufs [][]byte, offset int) int {
	for _, b := range bufs {
		if len(b)-offset > d.mtu {
			d.mtu = maxPacketLen
			if mtu, ok := d.readMTU(); ok {
				d.mtu = mtu
			}
			break
		}
	}
	return d.mtu
}

// readMTU asks the kernel for the MTU of the interface by the name it was
// created with, without allocating.
func (d *nativeDevice) readMTU() (int, bool) {
	d.ctlMu.Lock()
	defer d.ctlMu.Unlock()
	if d.ctl < 0 || d.mtuReq == nil || unix.IoctlIfreq(d.ctl, unix.SIOCGIFMTU, d.mtuReq) != nil {
		return 0, false
	}
	return int(int32(d.mtuReq.Uint32())), true
}

// segmenter writes the TCP packets longer than mtu that Write hands a TUN
// without a virtio-net header cut into packets no longer than mtu, with
// complete checksums, one at a time through a buffer of its own
// (offload.SplitGSOHead, which cuts the rest of the packet in place).
type segmenter struct {
	mtu  int
	out  [1][]byte // the segment buffer; allocated with the first super-frame
	size [1]int
	rest []byte               // what is left to cut of the packet being written
	hdr  offload.VirtioNetHdr // rest's
	seg  int                  // length of a segment cut but not yet written
}

// reset forgets a packet left half written.
func (s *segmenter) reset(mtu int) { s.mtu, s.rest, s.seg = mtu, nil, 0 }

// write writes pkt, cut up if it is a TCP packet longer than the MTU. After
// EAGAIN or EINTR it is to be called again with the same pkt: it goes on
// where it stopped.
func (s *segmenter) write(fd int, pkt []byte) error {
	if s.rest == nil && s.seg == 0 {
		h, ok := offload.SuperPacketHdr(pkt, s.mtu)
		if !ok {
			_, err := unix.Write(fd, pkt)
			return err
		}
		if s.out[0] == nil {
			s.out[0] = make([]byte, maxPacketLen)
		}
		s.rest, s.hdr = pkt, h
	}
	for {
		if s.seg == 0 {
			if s.rest == nil {
				return nil
			}
			_, rest, _, err := offload.SplitGSOHead(s.rest, &s.hdr, s.out[:], s.size[:], 0, offload.SplitOptions{})
			if err != nil {
				s.rest = nil
				return err
			}
			s.rest, s.seg = rest, s.size[0]
		}
		if _, err := unix.Write(fd, s.out[0][:s.seg]); err != nil {
			if err != unix.EAGAIN && err != unix.EINTR {
				s.rest, s.seg = nil, 0 // the packet is lost
			}
			return err
		}
		s.seg = 0
	}
}
