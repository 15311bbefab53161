"""The shared core: what every other package may import, and which imports none of them.

- ``assets``: the asset catalogue (built-in types in ``asset_types.toml``, operator files
  on top);
- ``wire``: the JSON wire format of readings and maintenance events on Kafka;
- ``settings``: configuration from environment variables, with secrets as ``SecretStr``;
- ``weak_secrets``: the password rules every login and URL is checked against;
- ``dataset_columns``: the column mappings of the recorded datasets we replay and train on.
"""
