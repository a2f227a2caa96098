"""Sends spoofed TCP SYNs into an interface (AF_PACKET), for the "a SYN flood
must not lock the listener" tests. Usage:
    syn_flood.py IFACE DST_MAC DST_IP DST_PORT COUNT SECONDS
Every SYN claims a source address no host in the test bed owns: half of them
in the destination's /24 (hosts .100-.199 of it; nobody answers the stack's
ARP requests for them), half in 10.200.250.0/24, which the bed does not
route anywhere. The COUNT SYNs are spread evenly over SECONDS (0: as fast as
possible), so the flood is bounded in count and time. Prints how many frames
the kernel accepted."""
import random
import socket
import struct
import sys
import time


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def syn(dst_mac, src_mac, src, dst, sport, dport, seq):
    # MSS 1460, SACK permitted, timestamps, window scale 7: what Linux sends.
    opts = struct.pack("!BBH", 2, 4, 1460) + b"\x04\x02" + struct.pack(
        "!BBII", 8, 10, seq & 0xFFFF, 0) + b"\x01\x03\x03\x07"
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, dport, seq, 0,
                                (5 + len(opts) // 4) << 4, 0x02, 64240, 0, 0) + opts)
    pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    tcp[16:18] = struct.pack("!H", csum(pseudo + bytes(tcp)))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp),
                               seq & 0xFFFF, 0x4000, 64, 6, 0, src, dst))
    ip[10:12] = struct.pack("!H", csum(bytes(ip)))
    return dst_mac + src_mac + b"\x08\x00" + bytes(ip) + bytes(tcp)


def main():
    iface, mac, dst_ip, dport, count, seconds = sys.argv[1:7]
    dst_mac = bytes.fromhex(mac.replace(":", ""))
    dst = socket.inet_aton(dst_ip)
    net = dst_ip.rsplit(".", 1)[0]
    count, dport, seconds = int(count), int(dport), float(seconds)
    rng = random.Random(count)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    start = time.monotonic()
    sent = 0
    for i in range(count):
        if i % 2 == 0:
            src = socket.inet_aton("%s.%d" % (net, 100 + rng.randrange(100)))
        else:
            src = socket.inet_aton("10.200.250.%d" % rng.randrange(1, 255))
        src_mac = bytes([0x02, 0xfe, 0xed]) + rng.randbytes(3)
        frame = syn(dst_mac, src_mac, src, dst, rng.randrange(1024, 65536), dport,
                    rng.randrange(1 << 32))
        try:
            s.send(frame)
            sent += 1
        except OSError:
            pass
        if seconds > 0 and i % 64 == 63:
            due = start + seconds * (i + 1) / count
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
    print(sent)


if __name__ == "__main__":
    main()
