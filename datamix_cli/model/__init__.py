"""The user's model: loading it from a factory, a state_dict, a torch.export archive or a pickle, and its identity."""
