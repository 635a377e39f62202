"""The Telegram bot (python-telegram-bot): handlers in the bot process, ``send`` in the delivery worker."""
