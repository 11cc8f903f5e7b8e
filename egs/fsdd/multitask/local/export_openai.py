"""Write a trained Whisper-architecture model (WhisperEncoder + MultitaskDecoder, Whisper's
log-mel, no feature normalisation) as an OpenAI Whisper checkpoint, and check that
openai-whisper itself reads it: `whisper.load_model(OUT)` must give our logits (to 1e-4)
and `whisper.decode` our greedy English transcripts on the first --check utterances of a
data dir.

    python local/export_openai.py exp/whisper_tiny_digits/model.avg.ckpt exp/whisper_tiny_digits/tiny.pt \
        --check-data-dir data/test [--check 8]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from speechlm.data.dataset import AudioDataset
from speechlm.interop.whisper import save_openai_checkpoint
from speechlm.search.whisper import WhisperSearch
from speechlm.train.pretrained import load_pretrained


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a speechlm checkpoint (model.avg.ckpt)")
    p.add_argument("out", type=Path, help="the OpenAI-format .pt to write")
    p.add_argument("--check-data-dir", type=Path, help="utterances to compare ours and openai-whisper's outputs on")
    p.add_argument("--check", type=int, default=8, help="how many (the data dir's first)")
    args = p.parse_args()
    torch.set_flush_denormal(True)
    model, tokenizer, _ = load_pretrained(args.checkpoint)
    save_openai_checkpoint(model, args.out)
    print(f"{args.out}: OpenAI Whisper checkpoint of {args.checkpoint} "
          f"({sum(p.numel() for p in model.parameters()):,} parameters)")
    if args.check_data_dir is None or args.check <= 0:
        return 0

    import whisper  # openai-whisper, the peer

    peer = whisper.load_model(str(args.out), device="cpu").eval()
    print(f"whisper.load_model: {peer.dims}")
    ds = AudioDataset(args.check_data_dir, sample_rate=16000)
    search = WhisperSearch(tokenizer, language="en")
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False)
    worst, agree, n = 0.0, 0, min(args.check, len(ds))
    with torch.no_grad():
        for i in range(n):
            audio = ds[i]["audio"]
            mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), n_mels=peer.dims.n_mels)
            prompt = torch.tensor([list(tokenizer.sot_sequence("en", "transcribe"))])
            theirs = peer(mel[None], prompt)
            enc = model.encode(audio[None], torch.tensor([len(audio)]))
            ours = model.decoder(enc.output, enc.lengths, prompt, torch.tensor([prompt.shape[1]]))
            worst = max(worst, float((ours - theirs).abs().max()))
            want = whisper.decode(peer, mel, options).text.strip()
            got = tokenizer.decode(search(model, enc)[0]).strip()
            agree += got == want
            if got != want:
                print(f"  {ds.ids[i]}: ours '{got}', whisper's '{want}'")
    print(f"checked {n} utterances of {args.check_data_dir}: max |logit difference| {worst:.2e}; "
          f"greedy transcripts equal on {agree}/{n}")
    if worst > 1e-3 or agree < n:
        print("error: openai-whisper does not compute what our model does", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
