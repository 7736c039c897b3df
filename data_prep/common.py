"""What every builder shares: verl's RL row schema, input reading, atomic parquet writes.

verl's RL dataset reads a parquet whose rows carry ``data_source``, ``prompt`` (a chat list),
``ability``, ``reward_model`` ({"style": "rule", "ground_truth": str}) and ``extra_info``. The
difficulty estimator reads ``extra_info["question"]``, the raw problem text without template.

Outputs are published all at once: every output of a run is written to a hidden temporary file
beside its target (``.NAME.<host>.<pid>.<random>.tmp``, created with the umask's permissions like
any other file), and only when all of them are complete are they renamed into place. A run that
is killed leaves such temporaries behind; the next run writing the same target removes those
whose process is gone.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import math
import numbers
import os
import re
import secrets
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from recipe.depo.fsutil import unwritable_dir_reason
from recipe.depo.prompt_text import BOXED_INSTRUCTION, last_user_message

REQUIRED_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")

# How many example locations each drop reason keeps for the summary.
_EXAMPLES_PER_REASON = 3


class DataPrepError(ValueError):
    """Bad input for a builder; the message names the file, row or column at fault."""


def make_row(
    *,
    data_source: str,
    prompt_text: str,
    question: str,
    ground_truth: str,
    index: int,
    split: str,
    ability: str = "math",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One row in verl's RL schema; ``question`` is the raw problem text the estimator reads.
    A ground truth the reward could never match (not a non-empty string) is refused here, so no
    builder can write one."""
    from recipe.depo.reward import reference_problem

    if not isinstance(ground_truth, str) or reference_problem(ground_truth) is not None:
        problem = reference_problem(ground_truth) or f"is a {type(ground_truth).__name__}, not a string"
        raise DataPrepError(f"{data_source} row {index}: ground_truth {problem}")
    extra_info = {"index": int(index), "split": split, "question": question}
    if extra:
        extra_info.update(extra)
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": prompt_text}],
        "ability": ability,
        "reward_model": {"style": "rule", "ground_truth": ground_truth},
        "extra_info": extra_info,
    }


def boxed_prompt(question: str) -> str:
    return f"{question.strip()}\n\n{BOXED_INSTRUCTION}"


@dataclass
class DropCounter:
    """Counts every dropped row by reason, so nothing is dropped silently."""

    reasons: collections.Counter = field(default_factory=collections.Counter)
    examples: dict = field(default_factory=dict)

    def drop(self, reason: str, where: str | None = None) -> None:
        """``where`` (e.g. "data.jsonl row 17") is kept for the first few rows of each reason so
        the summary can point at them."""
        self.reasons[reason] += 1
        if where is not None:
            kept = self.examples.setdefault(reason, [])
            if len(kept) < _EXAMPLES_PER_REASON:
                kept.append(where)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())


@dataclass
class BuildSummary:
    """What a builder did, printed at the end of every run."""

    name: str
    origin: str = ""
    rows_read: int = 0
    duplicates_removed: int = 0
    duplicate_answer_conflicts: int = 0
    drops: DropCounter = field(default_factory=DropCounter)
    rows_written: dict = field(default_factory=dict)  # output path -> rows
    warnings: list = field(default_factory=list)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        print(f"WARNING [{self.name}]: {message}", file=sys.stderr)

    def lines(self) -> list[str]:
        out = [f"== {self.name} ==", f"  source            {self.origin}", f"  rows read         {self.rows_read}"]
        out.append(f"  rows dropped      {self.drops.total}")
        for reason, count in self.drops.reasons.most_common():
            where = self.drops.examples.get(reason)
            suffix = f"  (e.g. {'; '.join(where)})" if where else ""
            out.append(f"    {count:>8}  {reason}{suffix}")
        out.append(f"  duplicates removed {self.duplicates_removed}")
        if self.duplicate_answer_conflicts:
            out.append(f"    of which {self.duplicate_answer_conflicts} had a different answer (first kept)")
        for path, count in self.rows_written.items():
            out.append(f"  rows written      {count} -> {path}")
        for message in self.warnings:
            out.append(f"  WARNING: {message}")
        return out

    def print(self) -> None:
        print("\n".join(self.lines()))


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a parquet / jsonl / json file into a DataFrame, with errors that name the file."""
    path = Path(path)
    if not path.exists():
        raise DataPrepError(f"input file {path} does not exist")
    suffix = "".join(path.suffixes[-1:]).lower()
    try:
        if suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif suffix == ".jsonl":
            frame = _frame_of(_jsonl_records(path))
        elif suffix == ".json":
            with open(path, encoding="utf-8-sig") as handle:
                payload = json.load(handle)
            if isinstance(payload, dict):
                # {"data": [...]} or a column-oriented dict
                payload = payload.get("data", payload)
            frame = _frame_of(payload)
        else:
            raise DataPrepError(f"input file {path}: unsupported format {suffix!r} (use .parquet, .jsonl or .json)")
    except DataPrepError:
        raise
    except Exception as exc:  # pyarrow / json errors do not name the file
        raise DataPrepError(f"input file {path} could not be read: {exc}") from exc
    if len(frame) == 0:
        raise DataPrepError(f"input file {path} is empty")
    return frame


def _jsonl_records(path: Path) -> list[Any]:
    """One JSON value per non-blank line, parsed by Python's json: pandas' reader rounds floats
    (1/3 stored as 0.3333333333333333 came back 0.33333333333333304) and turns integers past
    2**63 into floats, and either would then be written as the answer."""
    records = []
    with open(path, encoding="utf-8-sig") as handle:  # -sig: a leading byte-order mark is not data
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataPrepError(f"input file {path} line {number} is not JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataPrepError(f"input file {path} line {number} is a JSON {type(record).__name__}, not an object")
            records.append(record)
    return records


def _frame_of(payload: Any) -> pd.DataFrame:
    """A frame that holds JSON values as the Python objects json made (dtype object): a column
    with ints and floats (or a null) would otherwise become float64, and 12345678901234567890
    would be written as 1.2345678901234567e+19."""
    return pd.DataFrame(payload, dtype=object)


def require_columns(frame: pd.DataFrame, columns: Iterable[str], source: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataPrepError(f"{source}: missing column(s) {missing}; found {sorted(map(str, frame.columns))}")


def check_output(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse, before any work, an output that names a directory, that exists without
    ``overwrite``, or whose directory cannot be written."""
    text = os.fspath(path)
    path = Path(path)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise DataPrepError(f"output {text} is a directory; give the path of the parquet file to write")
    if path.exists() and not overwrite:
        raise DataPrepError(f"output {path} already exists; pass --overwrite to replace it")
    check_writable_dir(path.parent, what=f"output {path}")
    return path


def check_outputs(
    outputs: dict[str, str | os.PathLike | None],
    overwrite: bool,
    inputs: dict[str, str | os.PathLike | None] | None = None,
) -> dict[str, Path]:
    """``check_output`` for every output given (flag -> path; None: not given), and refuse, before
    any work, two outputs that are one file, or an output that is an input: however it is spelled
    (``X``, ``./X``, ``dir/../X``, a symlink, a hard link), the second write would replace the first
    (``--val-output X --output X`` kept the validation rows only) or the source."""
    given = {flag: path for flag, path in outputs.items() if path is not None}
    checked = {flag: check_output(path, overwrite) for flag, path in given.items()}
    sources = {flag: path for flag, path in (inputs or {}).items() if path is not None}
    seen: list[tuple[str, str | os.PathLike]] = []
    for flag, path in given.items():
        for other_flag, other in seen:
            if same_file(path, other):
                raise DataPrepError(
                    f"{flag} {os.fspath(path)} and {other_flag} {os.fspath(other)} are the same file; "
                    "give each output its own path"
                )
        for source_flag, source in sources.items():
            if same_file(path, source):
                raise DataPrepError(
                    f"{flag} {os.fspath(path)} is the {source_flag} file {os.fspath(source)}; "
                    "write the output to another path"
                )
        seen.append((flag, path))
    return checked


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same resolved path (symlinks, ``.``, ``..``), or,
    when both exist, the same inode (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist yet
        return False


def check_output_dir(directory: str | os.PathLike, what: str = "--output") -> Path:
    """For builders whose --output is a directory: refuse a file there, and an unwritable place."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise DataPrepError(f"{what} {directory} is a file; this builder writes a directory of parquet files")
    check_writable_dir(directory, what=f"{what} {directory}")
    return directory


def check_writable_dir(directory: Path, what: str) -> None:
    reason = unwritable_dir_reason(directory)
    if reason:
        raise DataPrepError(f"{what}: {reason}")


def _temp_name(target: Path) -> Path:
    return target.with_name(f".{target.name}.{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def remove_stale_temps(target: Path) -> list[Path]:
    """Delete temporaries of ``target`` left by killed runs: ours (host.pid.random) whose process
    on this host is gone, and the older ``.NAME.XXXXXXXX.tmp`` shape no current code writes."""
    removed = []
    host = socket.gethostname()
    prefix = f".{target.name}."
    try:
        candidates = [p for p in target.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return removed
    for candidate in candidates:
        middle = candidate.name[len(prefix) : -len(".tmp")].split(".")
        if len(middle) == 1:  # the older mkstemp shape
            stale = True
        elif len(middle) >= 3 and middle[-2].isdigit():
            owner, pid = ".".join(middle[:-2]), int(middle[-2])
            stale = owner == host and not _process_exists(pid)
        else:
            continue
        if stale:
            with contextlib.suppress(FileNotFoundError):
                candidate.unlink()
                removed.append(candidate)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _create_temp(target: Path) -> Path:
    """An empty hidden file beside ``target``, created with mode 0666 & ~umask: the mode the
    final file keeps after the rename (mkstemp's 0600 would survive it)."""
    while True:
        tmp = _temp_name(target)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


def publish_parquets(outputs: dict[str | os.PathLike, list[dict[str, Any]] | pd.DataFrame]) -> dict[str, Path]:
    """Write every output to its temporary, then rename them all into place: either every
    output of a run is published or none is. OS errors become one DataPrepError naming the path."""
    targets = list(outputs)
    for i, target in enumerate(targets):
        for other in targets[:i]:
            if same_file(target, other):
                raise DataPrepError(f"outputs {os.fspath(other)} and {os.fspath(target)} are the same file")
    staged: list[tuple[Path, Path]] = []
    try:
        for target, rows in outputs.items():
            target = Path(target)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                remove_stale_temps(target)
                tmp = _create_temp(target)
            except OSError as exc:
                raise DataPrepError(f"cannot write {target}: {exc.strerror or exc}") from None
            staged.append((tmp, target))
            frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
            try:
                frame.to_parquet(tmp, index=False)
            except OSError as exc:
                raise DataPrepError(f"cannot write {target}: {exc.strerror or exc}") from None
        for tmp, target in staged:
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise DataPrepError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    return {os.fspath(target): target for _, target in staged}


def write_parquet_atomic(rows: list[dict[str, Any]] | pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write one parquet so that readers see the old file or the new one, never a partial one."""
    return publish_parquets({path: rows})[os.fspath(path)]


# ---------------------------------------------------------------- shared CLI


def add_common_args(parser: argparse.ArgumentParser, *, output_help: str = "output parquet path") -> None:
    """The flags every builder shares."""
    parser.add_argument(
        "--input",
        default=None,
        help="local .parquet/.jsonl/.json file in the source's own layout (default: download from the hub)",
    )
    parser.add_argument("--output", required=True, help=output_help)
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    parser.add_argument("--limit", type=int, default=None, help="read only the first N source rows (smoke runs)")
    parser.add_argument("--seed", type=int, default=0, help="seed for every random choice (splits, sampling)")


def run_cli(
    main_fn: Callable[[argparse.Namespace], Any], parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> int:
    """Parse, run, and turn a DataPrepError into one clear line and exit status 2 (no traceback:
    the message already names the file, row or column)."""
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit <= 0:
        parser.error("--limit must be positive")
    try:
        main_fn(args)
    except DataPrepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


@contextlib.contextmanager
def at_row(where: str) -> Iterator[None]:
    """Prefix a DataPrepError raised while handling one row with that row's location."""
    try:
        yield
    except DataPrepError as exc:
        raise DataPrepError(f"{where}: {exc}") from None


def load_source(
    input_path: str | os.PathLike | None,
    hub_id: str,
    *,
    split: str,
    config: str | None = None,
    limit: int | None = None,
) -> tuple[pd.DataFrame, str]:
    """A local file when given, else the hub dataset; returns the frame and a label naming where
    it came from (used in every error message)."""
    if input_path is not None:
        frame = read_table(input_path)
        origin = str(input_path)
    else:
        origin = f"hub:{hub_id}" + (f"[{config}]" if config else "") + f":{split}"
        try:
            import datasets

            dataset = datasets.load_dataset(hub_id, config, split=split)
        except Exception as exc:  # network, auth, wrong split: say which dataset
            raise DataPrepError(
                f"could not load {origin}: {exc}. Without network access, download it elsewhere and pass --input FILE"
            ) from exc
        frame = dataset.to_pandas()
        if len(frame) == 0:
            raise DataPrepError(f"{origin} is empty")
    if limit is not None:
        frame = frame.head(limit)
    return frame.reset_index(drop=True), origin


def where(origin: str, row: int) -> str:
    return f"{origin} row {row}"


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def as_text(value: Any, field_name: str = "value") -> str | None:
    """A cell as a stripped string; None when missing or empty. Integral floats (AMC23 stores
    answers as 27.0) become "27". Anything but text or a number (a list, a dict, bytes, a
    bool) is a DataPrepError naming ``field_name``: written as str() it would look like data."""
    if is_missing(value):
        return None
    if isinstance(value, float) and math.isinf(value):
        raise DataPrepError(f"{field_name} is {value}, not an answer")
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)
        return str(int(value)) if value.is_integer() else repr(value)
    if not isinstance(value, str):
        shown = repr(as_plain(value))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise DataPrepError(f"{field_name} is a {type(value).__name__} ({shown}), expected text")
    text = value.strip()
    return text or None


def as_plain(value: Any) -> Any:
    """numpy arrays / pandas scalars from parquet -> plain Python, recursively."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: as_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_plain(v) for v in value]
    return value


def user_message(prompt: Any) -> str | None:
    """The user turn of a verl chat prompt (list of {"role","content"}), or a plain string prompt;
    stripped, None when there is none."""
    text = last_user_message(as_plain(prompt), skip_empty=True)
    return text.strip() or None if text is not None else None


_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")


def language_of(text: str) -> str:
    """ "zh" when the text contains CJK characters, else "en" (the only two in DAPO-Math-17k)."""
    return "zh" if _CJK_RE.search(text) else "en"


def dedup_key(text: str) -> str:
    """Whitespace-insensitive identity of a problem text."""
    return " ".join(text.split())


def strip_dollars(answer: str) -> str:
    """OlympiadBench answers arrive as "$\\frac{1}{2}$": the math-mode dollars are not part of the answer."""
    answer = answer.strip()
    while len(answer) >= 2 and answer.startswith("$") and answer.endswith("$"):
        answer = answer[1:-1].strip()
    return answer


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} in a reference solution (for sets without an answer column)."""
    from recipe.depo.reward import extract_last_boxed

    return extract_last_boxed(text)


def finish(
    summaries: BuildSummary | Sequence[BuildSummary], outputs: dict[str, list[dict[str, Any]]], overwrite: bool
) -> dict[str, Path]:
    """Refuse to write nothing, publish every output of the run together, print the summaries
    (one per source, listed in the order of ``outputs``' paths when there are several)."""
    summaries = [summaries] if isinstance(summaries, BuildSummary) else list(summaries)
    owners = summaries if len(summaries) == len(outputs) else [summaries[0]] * len(outputs)
    for (path, rows), summary in zip(outputs.items(), owners):
        if not rows:
            summary.print()
            raise DataPrepError(f"{summary.name}: no rows left to write to {path} (see the drop reasons above)")
    for path in outputs:
        check_output(path, overwrite)
    written = publish_parquets(outputs)
    for (path, rows), summary in zip(outputs.items(), owners):
        summary.rows_written[str(path)] = len(rows)
    for summary in summaries:
        summary.print()
    return written


def progress(iterable: Iterable, *, total: int | None = None, desc: str = "") -> Iterable:
    from tqdm import tqdm

    # tqdm writes to stderr; short runs (tests, --limit) get no bar noise
    return tqdm(iterable, total=total, desc=desc, disable=(total is not None and total < 2000), leave=False)


class UniqueBoxedRows:
    """Rows with the shared boxed-answer prompt, deduplicated by problem text, indexed as kept.

    A repeated problem counts in ``summary.duplicates_removed`` instead of becoming a row.
    """

    def __init__(self, summary: BuildSummary, data_source: str, split: str = "train") -> None:
        self.summary = summary
        self.data_source = data_source
        self.split = split
        self.rows: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    def add(self, question: str, ground_truth: str, extra: dict[str, Any]) -> None:
        key = dedup_key(question)
        if key in self._seen:
            self.summary.duplicates_removed += 1
            return
        self._seen.add(key)
        self.rows.append(
            make_row(
                data_source=self.data_source,
                prompt_text=boxed_prompt(question),
                question=question,
                ground_truth=ground_truth,
                index=len(self.rows),
                split=self.split,
                extra=extra,
            )
        )
