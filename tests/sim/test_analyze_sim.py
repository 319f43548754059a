"""`mptcp-tun analyze` on captures our simulator writes (two of our stacks, so every key,
token and nonce is known and the checks can be held to them): connections grouped by
token, the ladder's derived values verified, the statistics, every link type and
pcapng; and files that are empty, cut short, unknown or damaged: one line, never a
traceback."""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import dpkt
import pytest

from stack.host import Stack, ip
from stack.mptcp.connection import MptcpConfig
from tests.sim.apps import bulk, multipath_pair
from tests.sim.net import LinkProfile
from tools import analyze, plot
from tools.capture import PcapWriter

A2 = ip("10.0.2.2")
B2 = ip("10.0.2.1")
FAST = LinkProfile(delay=0.002, rate_bps=100e6)


def capture(tmp: Path, *, join: bool = True, announce: bool = False,
            mptcp_server: bool = True) -> tuple[Path, Stack, Stack, object, object]:
    """A 1 MB each-way MPTCP transfer between two of our stacks, as our --pcap writes
    it (raw IP, the client's tap: every packet once)."""
    a, b, net = multipath_pair(seed=21, profile=FAST)
    if not mptcp_server:
        b.config.mptcp = None
    path = tmp / "c.pcap"
    with path.open("wb") as f:
        w = PcapWriter(f)
        a.tap = lambda _d, pkt, now: w.write(1_700_000_000 + now, pkt)
        data = random.Random(3).randbytes(1_000_000)
        sa, sb = bulk(a, b, net, data, data[::-1],
                      join_from=[(A2, False)] if join else None,
                      announce=[B2] if announce else None)
    assert bytes(sb.got) == data
    return path, a, b, sa, sb


def run(path: Path, *extra: str) -> tuple[int, str]:
    p = argparse.ArgumentParser()
    analyze.configure(p)
    out = io.StringIO()
    rc = analyze.run(p.parse_args([str(path), *extra]), out)
    return rc, out.getvalue()


def test_a_connection_and_its_join_are_grouped_by_token_and_every_value_checks_out(
        tmp_path: Path) -> None:
    path, _a, _b, sa, sb = capture(tmp_path)
    an = analyze.analyse(analyze.read_capture(path))
    assert len(an.connections) == 1 and not an.tcp and not an.orphans
    (c,) = an.connections
    msk_a, msk_b = sa.conn.msk, sb.conn.msk
    assert c.initial.client_key == msk_a.local_key and c.initial.server_key == msk_b.local_key
    assert c.tokens() == {"client": msk_a.local_token, "server": msk_b.local_token}
    assert len(c.joins) == 1 and c.join_dirs == ["client"]
    assert c.joins[0].client[0] == "10.0.2.2"
    rc, text = run(path, "--connection", "1")
    assert rc == 0
    assert "MISMATCH" not in text, text
    assert "MP_JOIN of sf1's connection" in text
    for what in ("receiver key", "first mapping", "join token", "join thmac", "join HMAC"):
        assert any(what in line and "verified" in line for line in text.splitlines()), what
    assert f"token {msk_a.local_token:08x}" in text and f"{msk_b.local_token:08x}" in text
    # the ladder numbers frames as the file does: the first SYN is frame 1
    assert "\n  #1 " in text
    rows = analyze.stats(c)
    assert [r["subflow"] for r in rows] == ["sf1", "sf2"]
    assert sum(r["bytes"]["c2s"] for r in rows) >= 1_000_000
    assert all(r["bytes"]["c2s"] > 0 for r in rows)  # both subflows carried data
    assert round(sum(r["share"]["c2s"] for r in rows)) == 100


def test_a_token_selects_the_connection_and_json_has_what_the_listing_has(
        tmp_path: Path) -> None:
    path, _a, _b, sa, _sb = capture(tmp_path, join=False, announce=True)
    rc, text = run(path, "--json", "--connection", f"{sa.conn.msk.local_token:08x}")
    assert rc == 0
    got = json.loads(text)
    (c,) = got["connections"]
    assert c["tokens"]["client"] == f"{sa.conn.msk.local_token:08x}"
    assert c["keys"]["client"] == f"{sa.conn.msk.local_key:016x}"
    # the server announced 10.0.2.1 and the client joined it: a join by the client
    assert [s["kind"] for s in c["subflows"]] == ["MP_CAPABLE", "MP_JOIN by the client"]
    assert got["stats"]["connection"] == 1 and len(got["stats"]["subflows"]) == 2


def test_a_server_without_mptcp_is_a_fallback(tmp_path: Path) -> None:
    path, *_ = capture(tmp_path, join=False, mptcp_server=False)
    an = analyze.analyse(analyze.read_capture(path))
    (c,) = an.connections
    assert c.fallback is not None and "no MP_CAPABLE" in c.fallback
    _, text = run(path)
    assert "fallback" in text


def rewrite(src: Path, dst: Path, linktype: int, pcapng: bool = False) -> None:
    """The same packets under another link type (and file format)."""
    frames = list(dpkt.pcap.Reader(src.open("rb")))
    with dst.open("wb") as f:
        w: object = (dpkt.pcapng.Writer(f, linktype=linktype) if pcapng
                     else dpkt.pcap.Writer(f, linktype=linktype))
        for ts, pkt in frames:
            v6 = pkt[0] >> 4 == 6
            ethertype = 0x86DD if v6 else 0x0800
            if linktype == analyze.LINKTYPE_ETHERNET:
                pkt = bytes(6) + bytes.fromhex("020000000001") + struct.pack("!H", ethertype) + pkt
            elif linktype == analyze.LINKTYPE_SLL:
                pkt = struct.pack("!HHH8sH", 4, 1, 6, bytes(8), ethertype) + pkt
            elif linktype == analyze.LINKTYPE_SLL2:
                pkt = struct.pack("!HHIHBB8s", ethertype, 0, 2, 1, 4, 6, bytes(8)) + pkt
            w.writepkt(pkt, ts=ts)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("linktype", "pcapng"), [
    (analyze.LINKTYPE_ETHERNET, False), (analyze.LINKTYPE_SLL, False),
    (analyze.LINKTYPE_SLL2, False), (analyze.LINKTYPE_RAW, True),
    (analyze.LINKTYPE_SLL2, True)])
def test_every_link_type_and_pcapng_give_the_same_analysis(tmp_path: Path, linktype: int,
                                                           pcapng: bool) -> None:
    path, *_ = capture(tmp_path)
    other = tmp_path / "other"
    rewrite(path, other, linktype, pcapng)
    want = analyze.to_json(analyze.analyse(analyze.read_capture(path)), None)
    got = analyze.to_json(analyze.analyse(analyze.read_capture(other)), None)
    assert got["connections"] == want["connections"] and got["tcp"] == want["tcp"]
    assert got["frames"] == want["frames"] and got["link"] == analyze.LINK_NAMES[linktype]


def test_empty_unknown_and_cut_files_are_one_line_each(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path, *_ = capture(tmp_path, join=False)
    data = path.read_bytes()
    cases = {"empty": b"", "text": b"hello, this is no capture\n",
             "header cut": data[:10]}
    for name, body in cases.items():
        f = tmp_path / name.replace(" ", "_")
        f.write_bytes(body)
        rc, _ = run(f)
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and "mptcp-tun analyze:" in err, (name, err)
    unknown = tmp_path / "unknown_link"
    unknown.write_bytes(data[:20] + struct.pack("<I", 147) + data[24:])
    rc, _ = run(unknown)
    assert rc == 2 and "link type 147" in capsys.readouterr().err
    cut = tmp_path / "cut"
    cut.write_bytes(data[:len(data) // 2 + 7])
    rc, text = run(cut)
    assert rc == 0 and "warning: the file ends inside frame" in text
    assert run(tmp_path / "missing")[0] == 2


def test_damaged_captures_never_raise(tmp_path: Path) -> None:
    """Bytes flipped anywhere in a capture (headers, options, lengths): analyze reports
    what it can and never raises."""
    path, *_ = capture(tmp_path)
    data = bytearray(path.read_bytes())
    rnd = random.Random(7)
    bad = tmp_path / "bad.pcap"
    for _ in range(40):
        mutated = bytearray(data)
        for _ in range(rnd.randrange(1, 60)):
            i = rnd.randrange(24, len(mutated))
            mutated[i] = rnd.randrange(256)
        bad.write_bytes(bytes(mutated))
        rc, _ = run(bad, "--connection", "1")
        assert rc in (0, 2)
        rc, _ = run(bad, "--json")
        assert rc in (0, 2)


def test_the_v0_dialect_between_two_of_our_stacks_checks_out_and_tshark_decodes_it(
        tmp_path: Path) -> None:
    """The seed's RFC 6824 dialect on the wire: SHA-1 tokens and IDSNs, HMAC-SHA1 joins,
    each verified by analyze, and the same capture decoded by tshark without a
    malformed packet."""
    a, b, net = multipath_pair(seed=23, profile=FAST, cfg_a=MptcpConfig(version=0),
                               cfg_b=MptcpConfig(version=0))
    path = tmp_path / "v0.pcap"
    with path.open("wb") as f:
        w = PcapWriter(f)
        a.tap = lambda _d, pkt, now: w.write(1_700_000_000 + now, pkt)
        data = random.Random(5).randbytes(300_000)
        sa, sb = bulk(a, b, net, data, data[::-1], join_from=[(A2, False)])
    assert bytes(sb.got) == data and bytes(sa.got) == data[::-1]
    an = analyze.analyse(analyze.read_capture(path))
    (c,) = an.connections
    assert c.version == 0 and len(c.joins) == 1
    assert c.tokens() == {"client": sa.conn.msk.local_token, "server": sb.conn.msk.local_token}
    _, text = run(path, "--connection", "1")
    assert "MISMATCH" not in text and "(SHA-1)" in text
    for what in ("join token", "join thmac", "join HMAC"):
        assert any(what in line and "verified" in line for line in text.splitlines()), what
    tshark = shutil.which("tshark")
    if tshark is None:
        assert not os.environ.get("CI"), "CI installs tshark (tools/install.sh)"
        pytest.skip("tshark is not installed")
    # (the payload is random bytes: decoded as plain data, not by heuristics that
    # would take it for some protocol and find it malformed)
    out = subprocess.run([tshark, "-r", str(path), "-d", "tcp.port==5000,data",
                          "-Y", "_ws.malformed", "-T", "fields", "-e", "frame.number"],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"frames tshark finds malformed: {out.stdout.split()}"
    decoded = subprocess.run([tshark, "-r", str(path), "-Y", "mptcp", "-T", "fields",
                              "-e", "tcp.options.mptcp.version"], capture_output=True, text=True,
                             timeout=120, check=True)
    assert "0" in decoded.stdout.split(), "tshark sees no MPTCP v0 option"


@pytest.mark.parametrize(("kind", "suffix"), [("dsn", "png"), ("goodput", "png"),
                                              ("dsn", "svg")])
def test_the_plot_is_a_valid_image_of_the_connection(tmp_path: Path, kind: str,
                                                     suffix: str) -> None:
    path, *_ = capture(tmp_path)
    out = tmp_path / f"plot.{suffix}"
    rc, _ = run(path, "--connection", "1", "--plot", str(out), "--plot-kind", kind)
    assert rc == 0
    data = out.read_bytes()
    if suffix == "png":
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack("!II", data[16:24])
        assert (width, height) == (1210, 660) and 20_000 < len(data) < 2_000_000
    else:
        assert b"<svg" in data[:500] and len(data) > 20_000
    an = analyze.analyse(analyze.read_capture(path))
    s = plot.series(an, an.connections[0])
    # every byte of the plotted direction is on the plot once as new data, both subflows
    assert sum(b for pts in s.new_bytes.values() for _, b in pts) == 1_000_000
    assert all(s.points[n] for n in (0, 1)) and s.acks


def test_plotting_a_capture_without_mptcp_is_one_line(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path, *_ = capture(tmp_path, join=False)
    no_mptcp = tmp_path / "tcp.pcap"
    frames = list(dpkt.pcap.Reader(path.open("rb")))[:0]
    with no_mptcp.open("wb") as f:
        w = dpkt.pcap.Writer(f, linktype=analyze.LINKTYPE_RAW)
        for ts, pkt in frames:
            w.writepkt(pkt, ts=ts)
    rc, _ = run(no_mptcp, "--plot", str(tmp_path / "x.png"))
    assert rc == 2 and "no MPTCP connection to plot" in capsys.readouterr().err
