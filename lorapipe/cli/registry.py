"""``lorapipe registry ...``: list, show, push, pull, promote, rollback, diff, verify and gc adapters.

Imports nothing heavy at module level, so ``lorapipe --help`` stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from lorapipe.errors import RegistryError

app = typer.Typer(no_args_is_help=True, help=(
    "Versioned adapters: `name@vN` (immutable), aliases like `prod` that move, `rollback`.\n\n"
    "A plain NAME means its `prod` alias when set, else its newest version; NAME@latest is always "
    "the newest. The registry is a directory or an fsspec URL (s3://bucket/prefix); extra fsspec "
    "options (endpoint, credentials) come as JSON in $LORAPIPE_REGISTRY_OPTIONS."))

RegistryOpt = Annotated[str | None, typer.Option(
    "--registry", "-r", envvar="LORAPIPE_REGISTRY", show_default=False,
    help="Registry directory or URL (default: $LORAPIPE_REGISTRY, else ~/.local/share/lorapipe/registry).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
RefArg = Annotated[str, typer.Argument(help="NAME, NAME@vN, NAME@latest or NAME@ALIAS.", show_default=False)]
# the adapter check's two switches, named as on every command that loads an adapter (serve, predict, eval, export)
AllowPickleOpt = Annotated[bool, typer.Option("--allow-pickle", help="Accept .bin (pickle) adapter weights you trust.")]
AllowUnverifiedOpt = Annotated[bool, typer.Option("--allow-unverified", help="Accept an adapter without a "
                                                  "manifest.json to check its files' hashes against.")]
OPTIONS_ENV = "LORAPIPE_REGISTRY_OPTIONS"


def _open(url: str | None):
    from lorapipe.registry.core import Registry

    opts: dict[str, Any] | None = None
    if raw := os.environ.get(OPTIONS_ENV):
        try:
            opts = json.loads(raw)
        except ValueError as e:
            raise RegistryError(f"${OPTIONS_ENV}: not valid JSON ({e}); e.g. "
                                '\'{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}\'') from None
        if not isinstance(opts, dict):
            raise RegistryError(f"${OPTIONS_ENV}: expected a JSON object of fsspec options, got {raw!r}")
    return Registry(url, storage_options=opts)


def _json_wanted(flag: bool) -> bool:
    import click

    from lorapipe.cli.common import state

    return flag or state(click.get_current_context(silent=True)).json  # the root `--json` works too


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _console():
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(title), title_justify="left", show_edge=False)
    for c in columns:
        t.add_column(c)
    for r in rows:  # Text, not str: a message like "fix [x]" must not be read as rich markup
        t.add_row(*(Text("" if x is None else str(x)) for x in r))
    _console().print(t)


def _fmt_metrics(m: dict[str, Any]) -> str:
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())


@app.command("ls")
def ls_cmd(name: Annotated[str | None, typer.Argument(help="List this adapter's versions.")] = None,
           registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """List adapters, or the versions of one adapter."""
    reg = _open(registry)
    rows = reg.ls(name)
    if _json_wanted(as_json):
        return _print_json(rows)
    if name is None:
        if not rows:
            print(f"{reg.url}: empty; push with `lorapipe registry push NAME runs/<task>`")
            return
        _table(f"adapters in {reg.url}", ["name", "versions", "latest", "NAME resolves to", "aliases"],
               [[r["name"], r["versions"], r["latest"], r["default"],
                 ", ".join(f"{a}->{v}" for a, v in r["aliases"].items())] for r in rows])
    else:
        _table(f"{name} in {reg.url}", ["version", "created", "aliases", "metrics", "message"],
               [[f"v{r['version']}", r["created"], ",".join(r["aliases"]), _fmt_metrics(r["metrics"]),
                 r["message"]] for r in rows])


@app.command("show")
def show_cmd(ref: RefArg, registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Show one version: lineage, base model, data, metrics, files, code and where its logs are."""
    rec = _open(registry).show(ref)
    if _json_wanted(as_json):
        return _print_json(rec)
    base = rec.get("base_model") or {}
    src = rec.get("source") or {}
    code = rec.get("code") or {}
    lines = [f"{rec['ref']}  {rec.get('created')}  aliases: {', '.join(rec['aliases']) or '-'}",
             f"message:    {rec.get('message') or '-'}",
             f"parent:     {rec.get('parent') or '-'}",
             f"source:     {src.get('kind')} {src.get('path')} ({src.get('host')})",
             f"base model: {base.get('spec')} ({base.get('kind')}, weights {str(base.get('weights_sha256'))[:12]})",
             f"teacher:    {_ident(rec.get('teacher'))}   judge: {_ident(rec.get('judge'))}",
             f"code:       lorapipe {code.get('lorapipe')} @ {code.get('git_revision')}",
             f"digest:     {rec.get('digest')}",
             f"files:      {len(rec.get('files') or {})} ({sum((rec.get('sizes') or {}).values())} bytes)"
             + (f", report: {rec['report']}" if rec.get("report") else "")]
    for tb in (rec.get("logs") or {}).get("tensorboard") or []:
        lines.append(f"tensorboard: {tb}")
    con = _console()
    for line in lines:
        con.print(line, markup=False)
    if rec.get("data"):
        _table("data", ["file", "rows", "sha256"],
               [[f, d.get("rows"), str(d.get("sha256"))[:12]] for f, d in rec["data"].items()])
    if rec.get("metrics"):
        from lorapipe.registry.diff import flatten

        _table("metrics", ["metric", "value"], [[k, v] for k, v in flatten(rec["metrics"]).items()])
        _check_set_table(rec["metrics"])


def _check_set_table(metrics: dict[str, Any]) -> None:
    """Exact match and score on the eval split and on each check set (evaluate.extra_sets), a column each."""
    from lorapipe.registry.diff import check_sets

    sets = check_sets(metrics)
    if not sets:
        return
    ev = metrics.get("evaluate") or {}
    cols = [("eval split", ev)] + list(sets.items())
    keys = ("base_exact_match", "tuned_exact_match", "tuned_mean_score")
    _table("check sets (evaluate.extra_sets)", ["metric", *(f"{n} ({m.get('n', '?')})" for n, m in cols)],
           [[k, *(f"{m[k]:.3g}" if isinstance(m.get(k), (int, float)) else "-" for _, m in cols)] for k in keys])


def _ident(x: dict[str, Any] | None) -> str:
    if not x:
        return "-"
    return " ".join(str(v) for k, v in x.items() if v and k in ("kind", "model", "function", "base_url"))


@app.command("push")
def push_cmd(name: Annotated[str, typer.Argument(help="Adapter name, e.g. contacts.", show_default=False)],
             source: Annotated[Path, typer.Argument(help="Run directory (runs/<task>) or adapter directory.",
                                                    show_default=False)],
             message: Annotated[str | None, typer.Option("--message", "-m", help="What changed.")] = None,
             parent: Annotated[str | None, typer.Option(help="Version this one derives from.")] = None,
             dedup: Annotated[bool, typer.Option(help="Reuse the newest version if its content is identical.")]
             = False,
             promote: Annotated[str | None, typer.Option(help="Then point this alias at it (e.g. staging).")]
             = None,
             allow_pickle: AllowPickleOpt = False, allow_unverified: AllowUnverifiedOpt = False,
             registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Store a run or adapter directory as a new immutable version NAME@vN.

    The adapter is checked first, as every load checks it: files match its manifest.json,
    safetensors weights (pickle only with --allow-pickle), a manifest (unless --allow-unverified)."""
    reg = _open(registry)
    ref = reg.push(name, source, message=message, parent=parent, dedup=dedup, allow_pickle=allow_pickle,
                   allow_unverified=allow_unverified)
    event = reg.promote(ref, promote) if promote else None
    if _json_wanted(as_json):
        return _print_json({"ref": ref, "registry": reg.url, "promoted": event})
    print(ref + (f" (now {name}@{promote})" if promote else ""))


@app.command("pull")
def pull_cmd(ref: RefArg,
             dest: Annotated[Path, typer.Argument(help="Directory to create.", show_default=False)],
             only: Annotated[list[str] | None, typer.Option(
                 "--only", help="Only these roles: adapter, data, config, report, inputs, ...")] = None,
             force: Annotated[bool, typer.Option("--force", help="Replace DEST if it holds something else.")]
             = False,
             registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Materialise a version (adapter/, data/, config/, report/, version.json), checking every hash."""
    reg = _open(registry)
    resolved = reg.resolve(ref)
    out = reg.pull(resolved, dest, roles=only or None, overwrite=force)
    if _json_wanted(as_json):
        return _print_json({"ref": str(resolved), "dest": str(out), "adapter": str(out / "adapter")})
    print(f"{resolved} -> {out}")


@app.command("promote")
def promote_cmd(ref: RefArg, alias: Annotated[str, typer.Argument(help="e.g. prod, staging.", show_default=False)],
                message: Annotated[str | None, typer.Option("--message", "-m", help="Why.")] = None,
                registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Point NAME@ALIAS at the version REF means now (the previous target is kept for rollback)."""
    ev = _open(registry).promote(ref, alias, message=message)
    if _json_wanted(as_json):
        return _print_json(ev)
    prev = f"v{ev['previous']}" if ev.get("previous") else "nothing"
    print(f"{ev['name']}@{alias} -> v{ev['target']}" + (f" (was {prev})" if ev["changed"] else " (unchanged)"))


@app.command("rollback")
def rollback_cmd(name: Annotated[str, typer.Argument(help="NAME, or NAME@ALIAS.", show_default=False)],
                 alias: Annotated[str | None, typer.Argument(
                     help="Alias to move back (default: prod, or the one in NAME@ALIAS).")] = None,
                 message: Annotated[str | None, typer.Option("--message", "-m", help="Why.")] = None,
                 registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Move an alias back to the version it pointed at before its last promote."""
    from lorapipe.registry.refs import DEFAULT_ALIAS

    if "@" in name:
        name, _, in_ref = name.partition("@")
        alias = alias or in_ref
    ev = _open(registry).rollback(name, alias or DEFAULT_ALIAS, message=message)
    if _json_wanted(as_json):
        return _print_json(ev)
    print(f"{name}@{ev['alias']} -> v{ev['target']} (was v{ev['previous']})")


@app.command("history")
def history_cmd(name: Annotated[str, typer.Argument(help="Adapter name.", show_default=False)],
                alias: Annotated[str, typer.Argument(help="Alias.")] = "prod",
                registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Every promote and rollback of NAME@ALIAS, oldest first."""
    events = _open(registry).alias_history(name, alias)
    if _json_wanted(as_json):
        return _print_json(events)
    _table(f"{name}@{alias}", ["#", "at", "action", "target", "previous", "user", "message"],
           [[e.get("seq"), e.get("at"), e.get("action"), f"v{e.get('target')}",
             f"v{e['previous']}" if e.get("previous") else "-", e.get("user"), e.get("message")] for e in events])


@app.command("diff")
def diff_cmd(ref_a: RefArg, ref_b: RefArg, registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """What changed from REF_A to REF_B: config keys, data counts and hashes, metric deltas, files."""
    d = _open(registry).diff(ref_a, ref_b)
    if _json_wanted(as_json):
        return _print_json(d)
    con = _console()
    con.print(f"{d['a']} -> {d['b']}" + ("  (identical content)" if d["same_content"] else ""), markup=False)
    if d["config"]:
        _table("config", ["key", "old", "new"], [[c["key"], _short(c["old"]), _short(c["new"])] for c in d["config"]])
    if d["data"]:
        _table("data", ["file", "rows", "sha256"],
               [[x["file"], f"{x['old_rows']} -> {x['new_rows']}",
                 f"{str(x['old_sha256'])[:12]} -> {str(x['new_sha256'])[:12]}"] for x in d["data"]])
    if d["metrics"]:
        _table("metrics", ["metric", "old", "new", "delta"],
               [[m["key"], m["old"], m["new"], f"{m['delta']:+.4g}" if "delta" in m else ""] for m in d["metrics"]])
    for drop in d.get("check_set_drops", []):
        con.print(f"DROP on check set `{drop['set']}`: {drop['metric']} {drop['old']:.3g} -> {drop['new']:.3g} "
                  f"({drop['delta']:+.3g})", style="bold red", markup=False)
    for section in ("base_model", "teacher", "judge", "prompts"):
        for c in d.get(section, []):
            con.print(f"{c['key']}: {_short(c['old'])} -> {_short(c['new'])}", markup=False)
    f = d["files"]
    con.print(f"files: {len(f['added'])} added, {len(f['removed'])} removed, {len(f['changed'])} changed")


def _short(v: Any, n: int = 60) -> str:
    s = json.dumps(v, default=str) if not isinstance(v, str) else v
    return s if len(s) <= n else s[: n - 3] + "..."


@app.command("verify")
def verify_cmd(refs: Annotated[list[str], typer.Argument(help="References to check.", show_default=False)],
               allow_pickle: AllowPickleOpt = False, allow_unverified: AllowUnverifiedOpt = False,
               registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Re-hash every stored file of each REF and check its adapter as a load would; exit 1 if a file is
    missing or corrupt or the adapter would be refused."""
    reg = _open(registry)
    results = [reg.verify(r, allow_pickle=allow_pickle, allow_unverified=allow_unverified) for r in refs]
    if _json_wanted(as_json):
        _print_json(results)
    else:
        for res in results:
            status = "ok" if res["ok"] else "FAILED"
            print(f"{res['ref']}: {status} ({res['files']} files, {res['blobs']} blobs, {res['bytes']} bytes)")
            for p in res["problems"]:
                print(f"  {p}")
    if not all(r["ok"] for r in results):
        raise typer.Exit(1)


@app.command("gc")
def gc_cmd(min_age: Annotated[float, typer.Option("--min-age", help="Only remove leftovers untouched for this "
                                                  "many seconds (younger ones may be a push in progress).")] = 3600,
           registry: RegistryOpt = None, as_json: JsonOpt = False) -> None:
    """Remove the temporary files killed pushes left in the registry; list blobs no version uses."""
    res = _open(registry).gc(min_age_s=min_age)
    if _json_wanted(as_json):
        return _print_json(res)
    print(f"{res['registry']}: removed {len(res['removed'])} temporary file(s) of interrupted pushes; "
          f"{len(res['unreferenced'])} blob(s) no version refers to (kept)")
    for key in res["removed"]:
        print(f"  removed {key}")
