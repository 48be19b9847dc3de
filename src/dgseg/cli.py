"""The ``dgseg`` command line: train, eval, predict, info, demo, export, data check."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dgseg import strict_json


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=2e-4 (repeatable)")


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    import dgseg
    from dgseg.config import ConfigError
    from dgseg.config.loading import sets_nothing

    if args.config is not None and not args.overrides and sets_nothing(args.config):
        raise ConfigError(f"{args.config}: sets no key (empty, or comments only); expected an experiment config, "
                          "e.g. configs/demo.yaml (`dgseg info` with no CONFIG counts the defaults)")
    cfg = dgseg.load_config(args.config, args.overrides)
    t = cfg.model.text
    if t.name == "none" or (t.weights is None and t.embeddings is None):
        # counting needs shapes only: no weights file is read and no memory is filled
        cfg.model.backbone.weights = None
        with torch.device("meta"):
            model = dgseg.build_model(cfg)
    else:
        model = dgseg.build_model(cfg)
    counts = model.parameter_counts()
    info = {"name": cfg.name, "backbone": cfg.model.backbone.name, "adapter": cfg.model.adapter.name,
            "head": cfg.model.head.name, "params": counts,
            "trainable_percent": 100.0 * counts["trainable"] / max(counts["total"], 1)}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"{cfg.name}: {cfg.model.backbone.name} + {cfg.model.adapter.name} + {cfg.model.head.name}")
        for k, v in counts.items():
            print(f"  {k:>15}: {v:,}")
        print(f"  {info['trainable_percent']:.2f}% of all parameters train")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import dgseg
    from dgseg.engine.preflight import require_training_setup
    from dgseg.engine.train import train

    cfg = dgseg.load_config(args.config, args.overrides)
    require_training_setup(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    result = train(cfg, out, resume=args.resume, progress=not args.no_progress, force=args.force)
    from dgseg.engine.distributed import is_main

    if result.get("eval") is not None and not result.get("stopped") and is_main():
        from dgseg.engine.evaluate import summary_table

        print(summary_table(result["eval"], cfg))  # train() wrote it to eval.md / eval.json with the examples
    if is_main():
        kept = [n for n in ("checkpoints/", "log.jsonl", "curves.png", "eval.md") if (out / n.rstrip("/")).exists()]
        print(f"run folder: {out} ({', '.join(kept)})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from dgseg.config import domain_name
    from dgseg.data.corruptions import corruption_options
    from dgseg.engine.distributed import init_distributed, is_main
    from dgseg.engine.eval_record import eval_folder, evaluation_record
    from dgseg.engine.evaluate import evaluate, results_record, write_results
    from dgseg.engine.inference import load_model

    overrides = args.overrides + (["eval.tta.enabled=true"] if args.tta else [])
    names, severities = corruption_options(args.corruptions, args.severities, args.corruption_seed)
    model, cfg = load_model(args.checkpoint, overrides, config_path=args.config)
    rank, world, device = init_distributed()
    record = evaluation_record(args.checkpoint, cfg, device, "dgseg eval", overrides, args.config)
    domains = [domain_name(s, cfg.data.val) for s in cfg.data.val]  # refused here, not after evaluating:
    out = eval_folder(args.checkpoint, args.out, None if args.corruptions is not None else record, args.force, domains)
    if args.corruptions is not None:
        from dgseg.engine.robustness import corruptions_markdown, evaluate_corruptions, write_corruptions

        found = evaluate_corruptions(model.to(device), cfg, names, severities, args.corruption_seed or 0, device, rank,
                                     world, progress=not args.no_progress)
        if is_main():
            paths = write_corruptions(found, out, title=cfg.name, evaluated=record)
            print(strict_json.dumps(found) if args.json else corruptions_markdown(found, cfg.name))
            print(f"written: {', '.join(str(p) for p in paths)}")
        return 0
    kept: dict = {}  # eval.examples predictions per domain, for `dgseg report`
    results = evaluate(model.to(device), cfg, device, rank, world, progress=not args.no_progress, examples=kept)
    if is_main():
        table = write_results(results, cfg, out, examples=kept, evaluated=record)
        if args.json:
            print(strict_json.dumps(results_record(results, cfg, record)))
        else:
            print(table)
            print(f"written: {out / 'eval.md'}, {out / 'eval.json'}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from dgseg.atomic import check_new_output, check_out_folder
    from dgseg.engine.distributed import default_device
    from dgseg.engine.inference import load_model, predict_files, stored_config
    from dgseg.engine.prediction_files import InputImages, check_predict_sources, list_images
    from dgseg.engine.submission import dataset_settings, split_images, write_predictions, zip_folder

    check_out_folder(args.out)
    check_predict_sources(args.inputs, args.dataset, args.root, args.split)  # before the model loads
    zip_path = None if args.zip is None else check_new_output(args.zip or f"{Path(args.out).resolve()}.zip",
                                                              args.force, "--zip FILE")  # before any prediction
    overrides = args.overrides + (["eval.tta.enabled=true"] if args.tta else [])
    said = None
    if args.dataset:  # its data.val entries' resize and mode, as eval, unless given; conflicts before the model loads
        args.resize, args.mode, said = dataset_settings(stored_config(args.checkpoint, overrides), args.dataset,
                                                        args.resize, args.mode)
    model, cfg = load_model(args.checkpoint, overrides)
    model.to(default_device())
    if said:  # once the model it applies to has loaded: a refusal there is the only thing said
        print(said)
    if args.dataset is None and args.format == "trainids" and zip_path is None:
        written = predict_files(model, cfg, args.inputs, args.out, args.mode, not args.no_progress, args.resize)
        print(f"{len(written)} predictions written to {args.out} (*_labelTrainIds.png, *_color.png, *_overlay.png)")
        return 0
    files = split_images(args.dataset, args.root, args.split or "test") if args.dataset else list_images(args.inputs)
    if zip_path is not None:
        InputImages(path for path, _ in files).check(zip_path, "the --zip file")
    written = write_predictions(model, cfg, files, args.out, args.format, args.mode, not args.no_progress, args.resize)
    what = "label-ID PNGs (test-server format)" if args.format == "cityscapes-ids" else "predictions"
    print(f"{len(written)} {what} written to {args.out}")
    if zip_path is not None:
        print(f"zip: {zip_folder(args.out, zip_path, written, replace=args.force)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dgseg.atomic import check_new_output
    from dgseg.engine.checkpoint import load_checkpoint
    from dgseg.engine.inference import check_export_size, export_checked_onnx, export_full, load_model

    check_export_size(args.format, args.size)  # before the model loads
    check_new_output(args.out, args.force)
    model, cfg = load_model(args.checkpoint, args.overrides)
    if args.format == "full":
        _, meta = load_checkpoint(args.checkpoint)
        path = export_full(model, cfg, meta, args.out, replace=args.force)
        print(f"full model (backbone included) written to {path}")
    else:
        size = tuple(args.size) if args.size else tuple(cfg.data.crop_size)
        path, diff = export_checked_onnx(model, cfg, args.out, size, replace=args.force)
        print(f"ONNX written to {path}; onnxruntime vs PyTorch max abs difference {diff:.2e} at {size[0]}x{size[1]}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dgseg.data.corruptions import corruption_options
    from dgseg.demo import run_demo

    corruptions, severities = corruption_options(args.corruptions, args.severities)
    run_demo(quick=args.quick, compare=args.compare, out=args.out, overrides=args.overrides,
             corruptions=corruptions, severities=severities)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import signal

    from dgseg.bench import PAPER_METHODS, parse_list, run_bench
    from dgseg.bench_status import bench_status

    methods = parse_list(args.methods) if args.methods is not None else PAPER_METHODS
    if args.status:
        print(bench_status(methods, parse_list(args.seeds, int, "--seeds"), out=args.out, iters=args.iters,
                           overrides=args.overrides, config=args.config or None, jobs=args.jobs))
        return 0
    # terminated (a scheduler, `kill`): unwind like Ctrl-C, so the runs' child processes stop and checkpoint
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    run_bench(methods, parse_list(args.seeds, int, "--seeds"), out=args.out, iters=args.iters, overrides=args.overrides,
              config=args.config or None, threads=args.threads, jobs=args.jobs)
    print(f"report: {args.out}/bench.md, figures: {args.out}/bench.png, {args.out}/bench_curves.png")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from dgseg.report import write_report

    path = write_report(args.runs, args.out, baseline=args.baseline, confusion_domain=args.domain,
                        scenes=args.scenes, title=args.title)
    print(f"report page: {path} (open it in a browser; pictures in {path.parent / 'report_assets'})")
    return 0


def cmd_text_embed(args: argparse.Namespace) -> int:
    import dgseg
    from dgseg.atomic import check_new_output
    from dgseg.models.text import build_text_guidance, save_class_embeddings, text_embed_config

    check_new_output(args.out, args.force)
    cfg = dgseg.load_config(args.config, args.overrides + ["model.text.learnable_context=false",
                                                           "model.text.context_decoder=false"])
    from dgseg.data.classes import config_class_set

    names = list(config_class_set(cfg).names)
    guidance = build_text_guidance(text_embed_config(cfg.model.text, args.config), names)

    path = save_class_embeddings(args.out, guidance.class_embeddings, names, replace=args.force)
    print(f"class embeddings {tuple(guidance.class_embeddings.shape)} written to {path}; "
          f"use them with --set model.text.embeddings={path} --set model.text.learnable_context=false")
    return 0


def cmd_import_rein(args: argparse.Namespace) -> int:
    from dgseg.engine.import_rein import import_rein

    path, report = import_rein(args.checkpoint, args.backbone, args.out, config=args.config,
                               overrides=args.overrides, force=args.force)
    print(report.summary())
    print(f"dgseg checkpoint written to {path}\n"
          f"  evaluate: dgseg eval --checkpoint {args.out}   (data roots of the config: data/...; or --set data.val=...)\n"
          f"  predict:  dgseg predict --checkpoint {args.out} IMAGE_OR_DIR --out DIR")
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    from dgseg.data.check import check_options, run_check

    return run_check(args.name, args.root, args.split, **check_options(args))


def build_parser() -> argparse.ArgumentParser:
    from dgseg.image_size import resize_option

    parser = argparse.ArgumentParser(prog="dgseg", description="Domain-generalized semantic segmentation.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a config")
    p.add_argument("config")
    _add_set(p)
    p.add_argument("--out", help="run folder (default runs/<name>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--force", action="store_true",
                   help="train into a folder that holds a run: move the old run into previous-<time>/ first")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="per-domain mIoU table of a checkpoint")
    p.add_argument("config", nargs="?", help="config (default: the one stored in the checkpoint)")
    p.add_argument("--checkpoint", required=True)
    _add_set(p)
    p.add_argument("--out", help="folder for eval.json / eval.md (default: the run folder, for its final weights)")
    p.add_argument("--force", action="store_true", help="write another evaluation into the run folder, replacing its own")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (same as --set eval.tta.enabled=true)")
    p.add_argument("--corruptions", metavar="all|extra|FAMILY|NAME,..",
                   help="Cityscapes-C protocol: corrupted copies of every data.val set; writes corruptions.json "
                        "(mPC, rPC), corruptions.md and corruptions.png instead of eval.json")
    p.add_argument("--severities", help="with --corruptions: severities 1..5 (default all)")
    p.add_argument("--corruption-seed", type=int, help="with --corruptions: the per-image seeds' base (default 0)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="label PNGs and colour overlays for images")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--mode", choices=("whole", "slide"))
    p.add_argument("--resize", type=resize_option, metavar="W,H|FACTOR",
                   help="scale each image first (keeping its ratio as mmseg's Resize(scale=(W, H)), or by a factor) as "
                        "eval does; the prediction is resized back (default: own size; --dataset: its data.val entry's)")
    p.add_argument("--format", choices=("trainids", "cityscapes-ids"), default="trainids",
                   help="trainids: train-ID, colour and overlay PNGs; cityscapes-ids: one label-ID PNG per image, "
                        "named after it (Cityscapes / ACDC test servers)")
    p.add_argument("--dataset", help="predict a dataset split instead of files: cityscapes, acdc (all four "
                                     "conditions) or acdc-fog|night|rain|snow")
    p.add_argument("--root", help="the dataset folder (with --dataset)")
    p.add_argument("--split", help="the split (with --dataset; default test)")
    p.add_argument("--zip", nargs="?", const="", metavar="FILE", help="also zip the written files (default OUT.zip)")
    p.add_argument("--force", action="store_true", help="replace an existing zip file (never an input image)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (same as --set eval.tta.enabled=true)")
    _add_set(p)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("info", help="parameter counts of a config")
    p.add_argument("config", nargs="?")
    _add_set(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("demo", help="the embedded end-to-end benchmark (no datasets, no downloads)")
    p.add_argument("--quick", action="store_true", help="a 2-minute smoke run (30 iterations, 4 images per domain)")
    p.add_argument("--compare", action="store_true", help="also train frozen, full and lora")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--corruptions", metavar="all|NAME,..",
                   help="also a robustness row per method: Cityscapes-C corruptions of the source's held-out scenes")
    p.add_argument("--severities", help="with --corruptions (default 1,2,3,4,5)")
    _add_set(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="multi-seed method comparison on the synthetic benchmark; resumable")
    p.add_argument("--methods", help="comma-separated (default: rein,frozen,full,lora,adaptformer,vpt; "
                   "also rein-nolink)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--iters", type=int, help="iterations per run (default: the config's train.max_iters)")
    p.add_argument("--config", help="bench config (default: the shipped configs/bench.yaml)")
    p.add_argument("--out", default="runs/bench", help="the comparison folder: OUT/<method>/seed<k>/ runs, bench.md (default runs/bench)")
    p.add_argument("--threads", type=int, help="torch threads per run (default: the cores / --jobs)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained side by side, each in its own process "
                   "(default 1; 2 on a 2-core CPU gives about 1.2x the throughput for the small bench model)")
    p.add_argument("--status", action="store_true", help="print where each run stands (finished, checkpoint "
                   "at iteration N, not started; last source validation, rise so far) and exit; trains nothing")
    _add_set(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="one self-contained HTML page comparing run folders")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, help="folder for report.html and report_assets/")
    p.add_argument("--baseline", help="a run (name or folder): heat maps show the others' IoU difference to it")
    p.add_argument("--domain", help="domain of the confusion matrices (default: the first target domain)")
    p.add_argument("--scenes", type=int, default=3, help="prediction scenes per domain (default 3)")
    p.add_argument("--title", default="dgseg comparison")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="export a checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--format", choices=("onnx", "full"), required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="ONNX input size (default: crop)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file (refused without it)")
    _add_set(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("text-embed", help="CLIP class embeddings of model.text.weights to a file (no tower needed later)")
    p.add_argument("config")
    p.add_argument("--out", required=True, help="the safetensors file to write")
    p.add_argument("--force", action="store_true", help="replace an existing --out file (refused without it)")
    _add_set(p)
    p.set_defaults(func=cmd_text_embed)

    p = sub.add_parser("import-rein", help="turn an official Rein checkpoint (Rein + head weights) into a dgseg one")
    p.add_argument("checkpoint", help="the official file, e.g. iter_40000_published.pth")
    p.add_argument("--backbone", required=True, help="DINOv2 weights, e.g. dinov2_vitl14_pretrain.pth")
    p.add_argument("--out", required=True, help="a new run folder for the dgseg checkpoint (checkpoints/ inside it)")
    p.add_argument("--config", help="dgseg config of the checkpoint's recipe (default: configs/rein_dinov2_l_gta.yaml)")
    p.add_argument("--force", action="store_true", help="--out holds a run: move it into previous-<time>/ first")
    _add_set(p)
    p.set_defaults(func=cmd_import_rein)

    p = sub.add_parser("data", help="dataset tools")
    dsub = p.add_subparsers(dest="data_command", required=True)
    c = dsub.add_parser("check", help="scan a dataset: counts, class histogram, warnings, problems")
    c.add_argument("name")
    c.add_argument("root", nargs="?")
    c.add_argument("--split", default="train")
    from dgseg.data.check import add_check_options

    add_check_options(c)
    c.set_defaults(func=cmd_data_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    from dgseg.cli_empty import refuse_empty_values
    from dgseg.errors import USER_ERRORS, report_error
    from dgseg.made_folders import no_folder_left_on_error, output_paths

    parser = build_parser()
    args = parser.parse_args(argv)
    had_group = _group_running()  # a caller's own process group is the caller's to end
    try:
        refuse_empty_values(parser, args)
        with no_folder_left_on_error(output_paths(args)):  # a refusal leaves no new, empty output folder
            code = args.func(args)
    except USER_ERRORS as exc:  # ConfigError and the like; OSError: a full disk, a missing file
        command = " ".join(filter(None, ["dgseg", args.command, getattr(args, "data_command", None)]))
        return report_error(command, exc)  # "dgseg data check", as argparse names it
    if not had_group and _group_running():  # the command started one (torchrun): it ends here
        from dgseg.engine.distributed import end_command_group

        end_command_group(args.command)
    return code


def _group_running() -> bool:
    """Whether a torch.distributed process group exists (without importing torch when nothing did)."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


if __name__ == "__main__":
    sys.exit(main())
