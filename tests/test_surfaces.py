"""One verdict everywhere: the CLI, /predict, Batch, the MCP tool and the scan say the same for the same file."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import app
from tests.conftest import uploaded

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "assets" / "examples" / "wild_fake_flux.jpg", ROOT / "assets" / "examples" / "fake_cat.jpg"]
KEYS = ("verdict", "model", "reason")


def mcp_predict(url: str, path: Path) -> dict:
    import ast

    import anyio
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    data = f"data:image/jpeg;base64,{base64.b64encode(path.read_bytes()).decode()}"

    async def run():
        async with streamablehttp_client(f"{url}gradio_api/mcp/") as (read, write, _):
            async with ClientSession(read, write) as s:
                await s.initialize()
                r = await s.call_tool("predict", {"image": data, "model": "auto"})
                assert not r.isError, r.content
                return " ".join(getattr(c, "text", "") for c in r.content)

    return ast.literal_eval(anyio.run(run))  # Gradio's MCP server sends a dict output as its Python repr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_cli_predict_batch_mcp_and_scan_agree(server, path, tmp_path):
    from gradio_client import Client, handle_file

    api = Client(server, verbose=False).predict(handle_file(str(path)), "auto", api_name="/predict")
    cli = subprocess.run([sys.executable, "-m", "detector", "predict", str(path), "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    cli = json.loads(cli.stdout.splitlines()[0])
    _, _, (_, json_path), _ = app.batch_ui([uploaded(path)], "auto", lambda *a, **k: None)
    batch = json.loads(Path(json_path).read_text())["results"][0]
    mcp = mcp_predict(server, path)
    scan = subprocess.run([sys.executable, "-m", "detector", "scan", str(path), "--out", str(tmp_path / "s.parquet"),
                           "--workers", "0"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert scan.returncode == 0, scan.stderr
    row = pq.read_table(tmp_path / "s.parquet").to_pylist()[0]
    for name, other in (("cli", cli), ("batch", batch), ("mcp", mcp)):
        assert {k: other[k] for k in KEYS} == {k: api[k] for k in KEYS}, name
        assert other["p_fake"] == pytest.approx(api["p_fake"], abs=1e-4), name
    assert (row["verdict"], row["model"]) == (api["verdict"], api["model"])
    assert row["p_fake"] == pytest.approx(api["p_fake"], abs=1e-4)
