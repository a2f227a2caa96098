"""Writes malformed Ethernet frames into an interface (AF_PACKET), for the
"network input never crashes the stack" tests. Usage:
    fuzz_frames.py IFACE DST_MAC DST_IP COUNT SEED [DST_PORT]
A fifth of the frames each: random bytes; Ethernet with a truncated IPv4
header; IPv4 headers with a right checksum but lying lengths, flags and
fragment offsets; well-formed IPv4 with a garbage TCP header to DST_PORT
(default 7); truncated or garbage ARP. Prints how many frames the kernel
accepted."""
import random
import socket
import struct
import sys


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def main():
    iface, mac, dst_ip, count, seed = sys.argv[1:6]
    dport = int(sys.argv[6]) if len(sys.argv) > 6 else 7
    mac = bytes.fromhex(mac.replace(":", ""))
    dst = socket.inet_aton(dst_ip)
    src_mac = bytes.fromhex("02feedfacade")
    src = socket.inet_aton("10.200.254.254")
    rng = random.Random(int(seed))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    sent = 0
    for i in range(int(count)):
        kind = i % 5
        if kind == 0:  # random bytes, random length
            frame = rng.randbytes(rng.randint(14, 1514))
        elif kind == 1:  # Ethernet + truncated IPv4 header
            frame = mac + src_mac + b"\x08\x00" + rng.randbytes(rng.randint(0, 19))
        elif kind == 2:  # IPv4 header with a valid checksum but lying lengths, then junk
            ihl = rng.choice([0, 1, 4, 5, 5, 5, 6, 15])
            proto = rng.choice([1, 6, 6, 6, 17])
            total = rng.choice([0, 19, 20, 40, rng.randint(0, 65535)])
            hdr = bytearray(
                struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, rng.randint(0, 65535),
                            rng.choice([0, 0x4000, 0x2000, 0x1FFF]), 64, proto, 0, src, dst))
            hdr[10:12] = struct.pack("!H", csum(bytes(hdr)))
            frame = mac + src_mac + b"\x08\x00" + bytes(hdr) + rng.randbytes(rng.randint(0, 60))
        elif kind == 3:  # well-formed IPv4, TCP header with garbage offsets/options/flags
            tcp = bytearray(rng.randbytes(rng.randint(0, 60)))
            if len(tcp) >= 14:
                tcp[2:4] = struct.pack("!H", dport)
                tcp[12] = rng.randint(0, 255)  # data offset / reserved
            total = 20 + len(tcp)
            hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, i & 0xFFFF, 0x4000,
                                        64, 6, 0, src, dst))
            hdr[10:12] = struct.pack("!H", csum(bytes(hdr)))
            frame = mac + src_mac + b"\x08\x00" + bytes(hdr) + bytes(tcp)
        else:  # truncated or garbage ARP
            frame = mac + src_mac + b"\x08\x06" + rng.randbytes(rng.randint(0, 40))
        try:
            s.send(frame)
            sent += 1
        except OSError:
            pass
    print(sent)


main()
