"""An ``llm`` model plugin (the ``llm`` entry-point group, not steer's): ``steer-smollm2``,
the bundled SmolLM2-135M-Instruct run through transformers, so the ``llm`` judge and the
auto-interp explainer work offline with nothing but steer installed. It is a 135M model: it
follows rating instructions poorly. ``llm -m steer-smollm2 "Hi"`` runs it from the shell."""

import llm

MAX_NEW_TOKENS = 64


class SteerSmolLM2(llm.Model):
    """SmolLM2-135M-Instruct, greedy, through steer's model loader."""

    model_id = "steer-smollm2"
    can_stream = False
    loaded = None

    def execute(self, prompt, stream, response, conversation):
        import torch

        from steer import load_model

        if SteerSmolLM2.loaded is None:
            SteerSmolLM2.loaded = load_model()
        lm = SteerSmolLM2.loaded
        messages = [{"role": "system", "content": prompt.system}] if prompt.system else []
        messages.append({"role": "user", "content": prompt.prompt})
        text = lm.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        enc = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(lm.device)
        with torch.inference_mode():
            ids = lm.hf.generate(
                **enc,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
        yield lm.tokenizer.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


@llm.hookimpl
def register_models(register):
    register(SteerSmolLM2())
