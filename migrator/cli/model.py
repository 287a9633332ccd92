"""`migrator model`: a discrete-event model of postcopy (SimPy), calibrated from short local
runs, validated against measured ones, predicting guests of any size."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..errors import MigratorError

from . import options

DEFAULT_CALIBRATION = Path("results/model/calibration.json")


def register(sub) -> None:
    p = sub.add_parser("model", help="calibrate, validate and run the postcopy model")
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    c = msub.add_parser("calibrate", help="run short local experiments, fit the model's costs")
    c.add_argument("--out", type=Path, default=DEFAULT_CALIBRATION)
    c.add_argument("--runs", type=Path, default=Path("results/model/calibration-runs"),
                   help="where the calibration sweep's results tree goes (resumable)")
    c.set_defaults(func=calibrate)

    q = msub.add_parser("predict", help="predict a migration of any size, both modes")
    q.add_argument("--memory", type=options.size, required=True)
    options.add_hugepage_size(q, "1G")
    q.add_argument("--vcpus", type=options.count, default=4)
    q.add_argument("--pattern", default="zipf", help="a guest pattern, or trace:FILE")
    q.add_argument("--accesses", type=options.count, default=5000, help="per vCPU")
    q.add_argument("--seed", type=int, default=42)
    q.add_argument("--bandwidth", default="0", help="e.g. 100gbit (0: unshaped, as calibrated)")
    q.add_argument("--rtt", default="0", help="e.g. 50us")
    q.add_argument("--background-cap", type=options.size, default=0, metavar="BYTES")
    q.add_argument("--host-cpus", type=options.count,
                   help="the destination host's CPUs (default: as many as vCPUs: the guest "
                        "fills its host, so the background pull stands back for faults)")
    q.add_argument("--modes", default="hgm,hugepage")
    q.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=predict_cmd)

    v = msub.add_parser("validate", help="measure a sweep of two-host runs, compare with the "
                                         "model point by point; exit 1 outside the tolerance")
    v.add_argument("--quick", action="store_true", help="2 link settings instead of 4")
    v.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION)
    v.add_argument("--out", type=Path, help="results tree (default results/model/validation[-quick])")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=validate_cmd)

    pub = msub.add_parser("published", help="the model beside published postcopy figures")
    pub.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION)
    pub.add_argument("--json", action="store_true")
    pub.set_defaults(func=published_cmd)


def _runs(out: Path) -> list[tuple[Path, dict]]:
    found = []
    for f in sorted(out.glob("points/*/rep-*/results.json")):
        found.append((f.parent, json.loads(f.read_text())))
    return found


def calibrate(args) -> int:
    from ..experiment.host_info import host_block
    from ..host import hgm
    from ..model import calibration, predict
    from ..sweep import parse, runner

    spec = parse(calibration.CALIBRATION)
    counts = runner.run(spec, args.runs, attempts=3)
    if counts["failed"]:
        raise MigratorError(f"{counts['failed']} calibration run(s) failed (see "
                            f"{args.runs}/points/*/rep-*/error.txt); run again to resume")
    runs = _runs(args.runs)
    cal = calibration.fit(runs)
    cal["host"] = host_block(hgm.detect())
    predict.fit_startup(cal, runs)
    path = calibration.save(cal, args.out, cal.pop("host"), [str(p) for p, _ in runs])
    print(f"calibration: {path}")
    return 0


def _question(args):
    from ..model.predict import Question
    from ..netns.spec import parse_rate, parse_time

    try:
        bw = None if args.bandwidth in ("0", "") else parse_rate(args.bandwidth)
        rtt = parse_time(args.rtt)
    except ValueError as e:
        raise MigratorError(str(e)) from None
    trace = args.pattern[len("trace:"):] if args.pattern.startswith("trace:") else None
    if args.memory % args.hugepage_size:
        raise MigratorError(f"--memory must be a multiple of --hugepage-size")
    return Question(memory=args.memory, hugepage_size=args.hugepage_size, vcpus=args.vcpus,
                    pattern="uniform" if trace else args.pattern, accesses=args.accesses,
                    seed=args.seed, bandwidth=bw, rtt=rtt, background_cap=args.background_cap,
                    host_cpus=args.host_cpus or args.vcpus, trace=trace)


def predict_cmd(args) -> int:
    from ..model import calibration, predict

    cal = calibration.load(args.calibration)
    started = time.monotonic()
    out = predict.predict(cal, _question(args), [m.strip() for m in args.modes.split(",")])
    out["model_seconds"] = time.monotonic() - started
    out["calibration"] = {"path": str(args.calibration), "created": cal.get("created"),
                          "host": cal.get("host")}
    if args.json:
        json.dump(out, sys.stdout, indent=2, default=str)
        print()
        return 0
    for m in out["modes"]:
        s = m["vcpu_stall_seconds"]
        print(f"{m['mode']:9} faults {m['faults']:8d}  stall p50 {s['p50'] * 1e3:9.3f} ms  p99 "
              f"{s['p99'] * 1e3:9.3f} ms  total {s['total']:9.3f} s  migration "
              f"{m['duration_seconds']:8.2f} s  urgent {m['bytes_urgent'] / 2**30:8.2f} GiB  "
              f"background {m['bytes_background'] / 2**30:8.2f} GiB")
    print(f"(model: {out['model_seconds']:.1f} s)")
    return 0


def validate_cmd(args) -> int:
    from ..model import calibration, validate
    from ..sweep import parse, runner

    cal = calibration.load(args.calibration)
    body = validate.spec(args.quick)
    out = args.out or Path("results/model") / body["name"]
    say = (lambda s: None) if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
    counts = runner.run(parse(body), out, say=say, attempts=3)
    if counts["failed"]:
        raise MigratorError(f"{counts['failed']} validation run(s) failed (see "
                            f"{out}/points/*/rep-*/error.txt); run again to resume")
    used = {str(Path(r).resolve()) for r in cal.get("runs", [])}
    runs = [(p, r) for p, r in _runs(out) if str(p.resolve()) not in used]
    rows = validate.compare(cal, runs)
    written = validate.write(rows, out)
    if args.json:
        json.dump(written, sys.stdout, indent=2)
        print()
    else:
        print(validate.table(rows))
        s = written["summary"]
        print(f"\n{s['comparisons'] - s['outside']} of {s['comparisons']} within tolerance; "
              f"plot: {written['plot']}")
    return 0 if written["summary"]["outside"] == 0 else 1


def published_cmd(args) -> int:
    from ..model import calibration, published

    cal = calibration.load(args.calibration)
    rows = published.compare(cal)
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        print(published.table(rows))
    return 0



