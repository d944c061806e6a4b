"""A run, above the jobs layer: resolve the settings (device, precision, codec ``auto``),
name the outputs, plan, apply presets, drive the job, and tell the caller (typed events).

The layers, top-down (each imports only those below it; ``tests/test_structure.py`` checks):

    front-ends   cli, api, batch, bench, ops        parse, print, exit codes
    run          run.resolve, run.naming, run.plan, run.presets, run.job, run.images,
                 run.events
    jobs         chunk plan, on-disk state, executors, one chunk's work
    pipeline     decode -> infer -> encode for one segment
    media, models
    base         options (the option table), settings (frozen settings, fingerprint),
                 home, files, errors
"""
