from target_core.startup import defer_unused_imports

defer_unused_imports()  # before singer-sdk loads (target_core/startup.py)
