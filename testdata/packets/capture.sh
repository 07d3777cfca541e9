#!/bin/bash
# Regenerates the captures behind vxlan_kernel_vni1.hex and flannel_udp.hex
# (needs root, ip, bridge, tcpdump, python3). Two throwaway namespaces joined
# by a veth, 198.18.0.1 <-> 198.18.0.2; A gets a vxlan device programmed the
# way flanneld programs flannel.1. Prints each capture with tcpdump -XX; the
# .hex files are those bytes, annotated by hand. IP IDs and the VXLAN source
# port differ from run to run.
set -euo pipefail
A=ovgold$$a
B=ovgold$$b
OUT=$(mktemp -d)
cleanup() {
	ip netns del "$A" 2>/dev/null || true
	ip netns del "$B" 2>/dev/null || true
	rm -rf "$OUT"
}
trap cleanup EXIT

ip netns add "$A"
ip netns add "$B"
ip -n "$A" link add va address 22:bc:96:c9:72:60 type veth peer name vb address 02:5b:94:57:e2:9e netns "$B"
ip -n "$A" addr add 198.18.0.1/24 dev va
ip -n "$A" link set va up
ip -n "$B" addr add 198.18.0.2/24 dev vb
ip -n "$B" link set vb up

ip -n "$A" link add flannel.1 address a6:d7:18:cf:e6:cb type vxlan id 1 local 198.18.0.1 dev va dstport 8472 nolearning
ip -n "$A" link set flannel.1 mtu 1450 up
ip -n "$A" addr add 100.96.1.0/32 dev flannel.1
ip -n "$A" neigh add 100.96.2.0 lladdr 92:9d:e4:12:31:df dev flannel.1 nud permanent
ip netns exec "$A" bridge fdb append 92:9d:e4:12:31:df dev flannel.1 dst 198.18.0.2 self permanent
ip -n "$A" route add 100.96.2.0/24 via 100.96.2.0 dev flannel.1 onlink

# capture PORT SENDER: capture one datagram to PORT on B while A runs the
# python snippet SENDER, then print it.
capture() {
	ip netns exec "$B" timeout 10 tcpdump -i vb -n -w "$OUT/$1.pcap" -c 1 udp port "$1" 2>/dev/null &
	local td=$!
	sleep 1 # let tcpdump attach
	ip netns exec "$A" python3 -c "$PY_COMMON
$2"
	wait "$td"
	tcpdump -r "$OUT/$1.pcap" -n -vv -XX 2>/dev/null
}

PY_COMMON='
import socket, struct
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def echo():
    m = struct.pack("!BBHHH", 8, 0, 0, 0x4f56, 1) + b"overlayd golden!"
    return m[:2] + struct.pack("!H", csum(m)) + m[4:]
'

# VXLAN: the kernel builds the inner IPv4 header of a raw ICMP socket and
# routes it through flannel.1.
capture 8472 's = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.sendto(echo(), ("100.96.2.1", 0))'

# flannel udp: the payload is a container-to-container packet as flanneld
# reads it from flannel0 and sends it (TTL already decremented twice).
capture 8285 'm = echo()
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(m), 0xd4cf, 0x4000, 62, 1, 0,
                 socket.inet_aton("100.96.1.2"), socket.inet_aton("100.96.2.2"))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.18.0.1", 8285))
s.sendto(ip + m, ("198.18.0.2", 8285))'
