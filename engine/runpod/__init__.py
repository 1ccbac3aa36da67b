"""The RunPod Serverless target: config, GraphQL client, deploy flow and the provider."""
