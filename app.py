"""Web app (minimal until the web-app issue): drop an image, get P(fake) from the default model.

Run: python app.py   (honours GRADIO_SERVER_NAME / GRADIO_SERVER_PORT)
"""

from __future__ import annotations

import gradio as gr

import detector
from detector.preprocess import ImageError

PREDICTOR = detector.load()  # loaded once, at start-up


def predict(image) -> dict:
    """One image -> {"p_fake", "label", "threshold", "model"}."""
    if image is None:
        raise gr.Error("Please upload an image.")
    try:
        p = PREDICTOR.predict(image)
    except ImageError as e:
        raise gr.Error(str(e)) from None
    return {"p_fake": round(p, 6), "label": PREDICTOR.label(p), "threshold": PREDICTOR.threshold,
            "model": PREDICTOR.name}


def build_demo() -> gr.Blocks:
    with gr.Blocks(title="Real or AI-generated?") as demo:
        gr.Markdown("# Real or AI-generated?\nDrop an image; the model returns P(fake) "
                    f"(model `{PREDICTOR.name}`, trained on CIFAKE 32x32 images).")
        with gr.Row():
            image = gr.Image(type="pil", label="image", image_mode=None)
            result = gr.JSON(label="verdict")
        gr.Button("Analyse", variant="primary").click(predict, image, result, api_name="predict")
    return demo


demo = build_demo()

if __name__ == "__main__":
    demo.queue(default_concurrency_limit=2).launch()
