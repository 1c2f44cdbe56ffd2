"""The Stream function's adapters: DynamoDB history store and the provider client."""
