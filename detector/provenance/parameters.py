"""Generation parameters that image generators and their front ends write into the file: AUTOMATIC1111/Forge,
ComfyUI, Fooocus, NovelAI, InvokeAI, SwarmUI and Midjourney (``png_generation``, ``parse_a1111``,
``parse_comfyui``). Each reader is bounded: long values are cut and graphs are read up to a fixed size."""

from __future__ import annotations

import json
import re

from .evidence import LIMITS, MAX_SETTINGS_LINE, Finding, _clip


def png_generation(text: dict[str, str]) -> Finding | None:
    """Generation parameters that front ends write into PNG text chunks -> one finding, or None."""
    if "parameters" in text:
        p = text["parameters"]
        if p.lstrip().startswith("{"):
            js = _json(p)
            if isinstance(js, dict):
                tool = "Fooocus" if "fooocus" in p.lower() else "a Stable Diffusion front end"
                return _generation("png-text", "PNG text 'parameters' (JSON)", tool, _pick(js))
        params = parse_a1111(p)
        if params:
            tool = "Forge" if str(params.get("Version", "")).startswith("f") else "AUTOMATIC1111/Forge"
            return _generation("png-text", "PNG text 'parameters'", tool, params)
    if "prompt" in text or "workflow" in text:
        params = parse_comfyui(text.get("prompt", ""), text.get("workflow", ""))
        if params:
            return _generation("png-text", "PNG text 'prompt'/'workflow'", "ComfyUI", params)
    if text.get("Software", "").startswith("NovelAI") or "NovelAI" in text.get("Source", ""):
        js = _json(text.get("Comment", ""))
        params = _pick(js) if isinstance(js, dict) else {}
        params.update({"prompt": text.get("Description", "")[:500], "model": text.get("Source", "")})
        return _generation("png-text", "PNG text 'Comment'/'Source'", "NovelAI", params)
    for key in ("invokeai_metadata", "sd-metadata", "invokeai_graph", "Dream"):
        if key in text:
            js = _json(text[key])
            params = _pick(js) if isinstance(js, dict) else {"text": text[key][:500]}
            return _generation("png-text", f"PNG text '{key}'", "InvokeAI", params)
    if "sui_image_params" in text:
        js = _json(text["sui_image_params"])
        return _generation("png-text", "PNG text 'sui_image_params'", "SwarmUI",
                           _pick(js.get("sui_image_params", js)) if isinstance(js, dict) else {})
    desc = text.get("Description", "")
    if "Job ID:" in desc or "midjourney" in (text.get("Author", "") + desc).lower():
        return _generation("png-text", "PNG text 'Description'", "Midjourney",
                           {"prompt": desc.split("Job ID:")[0].strip()[:500],
                            "job_id": desc.split("Job ID:")[-1].strip()[:64] if "Job ID:" in desc else None})
    return None


def _generation(source: str, where: str, tool: str, params: dict) -> Finding:
    shown = ", ".join(f"{k} {params[k]}" for k in ("model", "Model", "sampler", "Sampler", "steps", "Steps", "seed",
                                                    "Seed") if params.get(k) not in (None, ""))
    return Finding(source, "declared", "ai-generated",
                   f"Generation parameters from {tool} in the file's metadata ({where})" + (f": {_clip(shown, 120)}"
                                                                                            if shown else ""),
                   f"{tool} (or a program imitating it) wrote a prompt and sampler settings into this file.",
                   LIMITS["metadata"], {"tool": tool, "where": where, **params})


def parse_a1111(text: str) -> dict:
    """AUTOMATIC1111/Forge ``parameters``: prompt, negative prompt, then a ``Key: value, ...`` line."""
    text = text.strip()
    lines = text.splitlines()
    if not lines or not re.match(r"^Steps: \d+", lines[-1].strip()):
        return {}
    settings = {}
    for part in _split_outside_quotes(lines[-1][:MAX_SETTINGS_LINE]):
        key, sep, value = part.partition(":")
        if sep and key.strip() and len(key) <= 64:
            settings[key.strip()] = value.strip().strip('"')
    body = "\n".join(lines[:-1])
    prompt, _, negative = body.partition("Negative prompt:")
    keep = {k: settings[k] for k in list(settings)[:24]}
    return {"prompt": _clip(prompt.strip(), 500), "negative_prompt": _clip(negative.strip(), 300), **keep}


def _split_outside_quotes(line: str) -> list[str]:
    """``a: 1, b: "x, y", c: 2`` -> the three parts (one pass: no regular expression to backtrack)."""
    parts, start, quoted, escaped = [], 0, False, False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == "," and not quoted:
            parts.append(line[start:i])
            start = i + 1
    parts.append(line[start:])
    return parts


def parse_comfyui(prompt: str, workflow: str) -> dict:
    """ComfyUI's API graph (``prompt``) or UI graph (``workflow``): node types, checkpoint, sampler settings."""
    graph = _json(prompt)
    nodes = []
    if isinstance(graph, dict):
        nodes = [n for n in graph.values() if isinstance(n, dict) and "class_type" in n][:2000]
    out: dict = {}
    if nodes:
        out["nodes"] = sorted({str(n["class_type"]) for n in nodes})[:40]
        for n in nodes:
            inputs = n.get("inputs") if isinstance(n.get("inputs"), dict) else {}
            for k in ("ckpt_name", "unet_name", "model_name"):
                if isinstance(inputs.get(k), str):
                    out.setdefault("model", inputs[k])
            if "sampler" in str(n["class_type"]).lower():
                for k in ("seed", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "denoise"):
                    if isinstance(inputs.get(k), (int, float, str)):
                        out.setdefault(k.replace("noise_", "").replace("sampler_name", "sampler"), inputs[k])
            if str(n["class_type"]).startswith("CLIPTextEncode") and isinstance(inputs.get("text"), str):
                out.setdefault("prompt", _clip(inputs["text"], 500))
    else:
        wf = _json(workflow)
        if isinstance(wf, dict) and isinstance(wf.get("nodes"), list):
            out["nodes"] = sorted({str(n.get("type")) for n in wf["nodes"][:2000] if isinstance(n, dict)})[:40]
    return out


def _json(s: str):
    try:
        return json.loads(s)
    except (ValueError, TypeError, RecursionError):
        return None


def _pick(d: dict) -> dict:
    keep = {}
    for k, v in list(d.items())[:64]:
        if isinstance(v, (str, int, float, bool)):
            keep[str(k)] = _clip(v, 300) if isinstance(v, str) else v
    return keep
