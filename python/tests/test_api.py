"""The Python package: import, load, score (equal to `fidelis score` row for row), features,
info, validate, train, and errors that carry the CLI's message and exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fidelis
from conftest import ROOT, run
from fidelis import _native

FIXTURE = ROOT / "tests/fixtures/model_v1"


def cli_scores(ws: Path, as_of: str) -> pa.Table:
    """`fidelis score` in a copy of the workspace (fresh output: a first run)."""
    out = ws / f"cli-{as_of}"
    shutil.rmtree(out, ignore_errors=True)
    cfg = (ws / "fidelis.toml").read_text().replace('dir = "output"', f'dir = "{out.name}"')
    (ws / "cli.toml").write_text(cfg)
    run(["score", "--config", "cli.toml", "--as-of", as_of, "-q"], ws)
    return plain_table(pq.read_table(out / f"scores/run={as_of}/part-0.parquet"))


def plain(column):
    """Strings in one representation (Parquet readers may give string views, the package
    gives large strings: the same values)."""
    t = column.type
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return column.cast(pa.string())
    return column


def plain_table(t: pa.Table) -> pa.Table:
    return t.cast(pa.schema([pa.field(f.name, plain(t.column(f.name)).type) for f in t.schema]))


def assert_same_rows(ours: pa.Table, theirs: pa.Table) -> None:
    """Same columns in the same order, same rows, every value equal (floats to the bit)."""
    assert ours.column_names == theirs.column_names
    assert ours.num_rows == theirs.num_rows > 0
    for name in ours.column_names:
        a, b = plain(ours.column(name)), plain(theirs.column(name))
        assert a.type == b.type, f"{name}: {a.type} vs {b.type}"
        assert a.to_pylist() == b.to_pylist(), f"column {name} differs"


def test_import_and_version():
    assert fidelis.__version__
    assert {"load_model", "validate", "train", "Model", "InputError"} <= set(fidelis.__all__)


def test_a_model_scores_exactly_as_the_cli_on_the_demo_data(demo):
    m = fidelis.load_model(demo / "models")
    tx = pq.read_table(demo / "data/transactions.parquet")
    ours = m.score(tx, as_of="2024-10-01")
    assert_same_rows(ours, cli_scores(demo, "2024-10-01"))
    # The default date is the day after the last transaction, as in the CLI.
    assert ours.column("as_of")[0].as_py().isoformat() == "2024-10-01"


def test_a_model_scores_exactly_as_the_cli_on_cdnow(cdnow):
    # The whitespace file as a frame with the columns configs/cdnow.toml maps.
    rows = [line.split() for line in (cdnow / "CDNOW_master.txt").read_text().splitlines() if line.strip()]
    tx = pa.table(
        {
            "customer_id": [r[0] for r in rows],
            "date": [r[1] for r in rows],
            "number_of_cds": [r[2] for r in rows],
            "dollar_value": [r[3] for r in rows],
        }
    )
    m = fidelis.load_model(cdnow / "models", config=cdnow / "fidelis.toml")
    ours = m.score(tx, as_of="1998-07-01")
    assert ours.num_rows > 3000
    assert_same_rows(ours, cli_scores(cdnow, "1998-07-01"))


def test_polars_and_pandas_frames_give_the_same_scores():
    m = fidelis.load_model(FIXTURE / "models")
    tx = pq.read_table(FIXTURE / "data/transactions.parquet")
    arrow = m.score(tx, as_of="2024-12-31")
    pl = pytest.importorskip("polars")
    assert m.score(pl.from_arrow(tx), as_of="2024-12-31").equals(arrow)
    pytest.importorskip("pandas")
    assert m.score(tx.to_pandas(), as_of="2024-12-31").equals(arrow)
    # A model directory loads the same as its models directory's latest.
    m2 = fidelis.load_model(FIXTURE / "models" / m.model_id)
    assert m2.model_id == m.model_id


def test_the_fixture_scores_as_it_did_when_it_was_made():
    m = fidelis.load_model(FIXTURE / "models")
    tx = pq.read_table(FIXTURE / "data/transactions.parquet")
    then = pq.read_table(FIXTURE / "expected/scores/as_of=2024-12-31/scores.parquet")
    now = m.score(tx, as_of="2024-12-31")
    # Since the fixture was made the scores gained `experiment_group`, and `contact` holds the
    # control group out: every other column is as it was; `contact` too except for controls.
    group = now.column("experiment_group").to_pylist()
    was, contact = then.column("contact").to_pylist(), now.column("contact").to_pylist()
    assert [c for c, g in zip(contact, group, strict=True) if g != "control"] == [
        c for c, g in zip(was, group, strict=True) if g != "control"
    ]
    assert all(w and not c for w, c, g in zip(was, contact, group, strict=True) if g == "control")
    assert "control" in group
    # And `top_reasons` show each feature's value and contribution: the features named are
    # those named then, in the same order.
    names = [
        ", ".join(p.split("=")[0] for p in r.split(", ")) if r else r for r in now.column("top_reasons").to_pylist()
    ]
    assert names == then.column("top_reasons").to_pylist()
    keep = [c for c in then.column_names if c not in ("contact", "top_reasons")]
    assert_same_rows(now.select(keep), then.select(keep))


def test_features_and_info():
    m = fidelis.load_model(FIXTURE / "models")
    tx = pq.read_table(FIXTURE / "data/transactions.parquet")
    f = m.features(tx, as_of="2024-12-31")
    info = m.info
    assert f.column_names == ["customer_id", *info["model"]["features"]]
    scores = m.score(tx, as_of="2024-12-31")
    assert f.column("customer_id").to_pylist() == scores.column("customer_id").to_pylist()
    assert 0.5 < info["metrics"]["churn"]["holdout"]["roc_auc"] <= 1
    assert info["decision"]["bands"]["bands"][0]["name"] == "low"


def test_errors_carry_the_cli_message_and_exit_code(tmp_path):
    m = fidelis.load_model(FIXTURE / "models")
    with pytest.raises(fidelis.InputError) as e:
        m.score(pa.table({"customer_id": ["a"], "ts": ["2024-01-01"]}))
    assert e.value.exit_code == 2
    assert "column `amount` not found" in str(e.value)
    with pytest.raises(fidelis.InputError) as e:
        fidelis.load_model(tmp_path)
    assert "run `fidelis train` first" in str(e.value)
    with pytest.raises(TypeError):
        m.score([1, 2, 3])


def test_named_exit_codes_are_the_clis(tmp_path):
    """fidelis.errors.ExitCode and the errors' codes are the CLI's: bad input exits INPUT,
    each error class carries its code."""
    from fidelis.errors import ExitCode, FidelisError, LockedError, OutputError, ScoresWrittenError

    out = run(["validate", "--config", "missing.toml"], tmp_path, check=False)
    assert out.returncode == ExitCode.INPUT
    for cls, code in [
        (fidelis.InputError, ExitCode.INPUT),
        (LockedError, ExitCode.LOCKED),
        (OutputError, ExitCode.OUTPUT),
        (ScoresWrittenError, ExitCode.AFTER_SCORES),
        (FidelisError, ExitCode.INTERNAL),
    ]:
        assert cls("x").exit_code == code
    assert [c.value for c in ExitCode] == list(range(8))


def test_the_type_stubs_name_everything_the_extension_has():
    """python/fidelis/_native.pyi lists every public function and class of the extension, and
    every public method of each class, and nothing it does not have (a Rust rename breaks this
    test, not an editor's completion)."""
    import ast

    from fidelis import _native

    stub = ast.parse((ROOT / "python/fidelis/_native.pyi").read_text())
    top = {n.name for n in stub.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    top |= {n.target.id for n in stub.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    real = {n for n in dir(_native) if not n.startswith("_")} | {"__version__"}
    assert top - {"ArrowStream"} == real
    for cls in (n for n in stub.body if isinstance(n, ast.ClassDef)):
        stubbed = {f.name for f in cls.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")}
        # Properties in the stub are getters in Rust (attributes), the rest methods.
        real_cls = getattr(_native, cls.name)
        for f in (f for f in cls.body if isinstance(f, ast.FunctionDef) and not f.name.startswith("_")):
            is_property = any(getattr(d, "id", "") == "property" for d in f.decorator_list)
            kind = type(real_cls.__dict__[f.name]).__name__
            assert (kind == "getset_descriptor") == is_property, f"{cls.name}.{f.name}: {kind}"
        have = {m for m in dir(real_cls) if not m.startswith("_")}
        assert stubbed == have, cls.name


def declared_matches(declared: list[tuple[str, str]], local: pa.Table) -> None:
    """The ``(name, Spark type)`` columns ``_native.local_columns`` declares are ``local``'s
    names, types and order."""
    from fidelis.spark._core import _ARROW

    found = [(f.name, f.type) for f in local.schema]
    assert [n for n, _ in found] == [n for n, _ in declared]
    for (name, want), (_, got) in zip(declared, found, strict=True):
        got = pa.string() if pa.types.is_large_string(got) or pa.types.is_string_view(got) else got
        assert got == _ARROW[want], f"{name}: {got} vs {want}"


def test_the_declared_per_customer_columns_are_what_the_rust_core_returns():
    """fidelis.spark declares the per-customer columns the Rust core returns for a bucket
    (Spark needs the schema before it runs anything) from ``_native.local_columns``; they must
    be the names, types and order ``score_local`` returns: a column added, renamed or retyped
    in ``score::local_scores`` and not in ``score::LOCAL_COLUMNS`` fails here."""
    from fidelis.spark._core import _table

    m = fidelis.load_model(FIXTURE / "models")
    tx = pq.read_table(FIXTURE / "data/transactions.parquet")
    local = _table(m._native.score_local(tx.__arrow_c_stream__(), "2024-12-31"))
    declared_matches(_native.local_columns(), local)


def test_validate_and_train(tmp_path):
    shutil.copytree(FIXTURE / "data", tmp_path / "data")
    (tmp_path / "fidelis.toml").write_text(
        f'[input.transactions]\npath = "{tmp_path}/data/transactions.parquet"\n\n[model]\niterations = 30\n\n'
        f'[baselines]\nenabled = false\n\n[paths]\nmodels_dir = "{tmp_path}/models"\n'
        f'reports_dir = "{tmp_path}/reports"\n'
    )
    summary = fidelis.validate(tmp_path / "fidelis.toml")
    assert summary["transactions"]["customers"] == 600
    model_id = fidelis.train(tmp_path / "fidelis.toml")
    assert (tmp_path / "models/latest").read_text().strip() == model_id
    assert json.loads((tmp_path / "models" / model_id / "model.json").read_text())["format_version"] == 2
    assert fidelis.load_model(tmp_path / "models").model_id == model_id


def test_dropped_rows_are_said_and_a_duplicated_column_is_an_input_error():
    """Issue 36 (item 8): `m.score(tx)` on a frame with 1% null amounts dropped customers
    without a word, and a frame with a duplicated column raised the generic error (exit 1)."""
    import pyarrow.compute as pc

    m = fidelis.load_model(FIXTURE / "models")
    tx = pq.read_table(FIXTURE / "data/transactions.parquet")
    n = tx.num_rows
    amount = tx.column("amount").to_pylist()
    nulled = list(range(0, n, 100))
    for i in nulled:
        amount[i] = None
    bad = tx.set_column(tx.schema.get_field_index("amount"), "amount", pa.array(amount, tx.schema.field("amount").type))
    with pytest.warns(fidelis.errors.DataWarning) as caught:
        scores, summary = m.score(bad, as_of="2024-12-31", return_summary=True)
    text = str(caught[0].message)
    assert f"{len(nulled)} of {n} transaction rows dropped" in text, text
    assert "amount" in text and "customers lost" in text, text
    assert summary["rows_read"] == n and summary["rows_valid"] == n - len(nulled)
    assert m.last_summary == summary
    assert summary["customers_lost"] >= 0 and isinstance(summary["dropped"], list)
    assert scores.num_rows > 0
    # Clean input: no warning.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", fidelis.errors.DataWarning)
        m.score(tx, as_of="2024-12-31")
    # A duplicated column: an InputError (exit 2) naming it.
    dup = pa.Table.from_arrays(
        [tx.column("customer_id"), tx.column("ts"), tx.column("amount"), pc.multiply(tx.column("amount"), 2)],
        names=["customer_id", "ts", "amount", "amount"],
    )
    with pytest.raises(fidelis.InputError) as err:
        m.score(dup, as_of="2024-12-31")
    assert "amount" in str(err.value) and "more than once" in str(err.value)
    assert err.value.exit_code == 2


def test_the_docstring_examples_run(monkeypatch):
    """The examples in the docstrings (``help(fidelis.Model.score)``, ``fidelis.uplift``) run
    from the repository root and print what they say."""
    import doctest

    import fidelis.uplift

    monkeypatch.chdir(ROOT)
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for module in [fidelis, fidelis.uplift]:
        result = doctest.testmod(module, optionflags=flags, extraglobs={"fidelis": fidelis, "pq": pq})
        assert result.attempted > 5, module.__name__
        assert result.failed == 0, module.__name__
