"""Sources that a pruned folder carries so that transformers alone rebuilds the narrowed model
(`AutoModelFor….from_pretrained(DIR, trust_remote_code=True)` where optin is not installed).

They are copied into the folder as they are (optin.remote_code) and import torch, transformers and
their neighbours in the folder only, never optin: `optin_pruned.py` is the generic part;
`modeling_optin_<adapter module>.py` is a family's part (its Layout, and `Optin<class>` for each
transformers class its adapters build). A family built on optin's own model code imports it as
`.efficientnet_lite` / `.timm_vit`: optin/models/ files of those names are carried beside it.
"""
