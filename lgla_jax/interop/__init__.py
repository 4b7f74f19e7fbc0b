"""The official code's files, in and out, without torch: ``torch_file`` reads the tensors of a
``torch.save`` file (refusing code), ``convert`` maps the official ``state_dict`` names to
Flax variables and back."""
